"""Frame sampler: differential tests of the C++ core against a pure-Python reference."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import vcd_core
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sampling import FrameSelection, SamplingPolicy, select_frames

# --- reference (Note [Sampling contract] in cpp/sampler.h, written independently) -------


def reference_select(pts, fps=None, times=None, duration=-1.0):
    finite = [(p, i) for i, p in enumerate(pts) if math.isfinite(p)]
    if not finite:
        return [], []
    t0 = min(p for p, _ in finite)
    distinct = sorted({p for p, _ in finite})
    if duration > 0:
        t_end = duration
    else:
        steps = sorted(b - a for a, b in zip(distinct, distinct[1:]))
        if not steps:
            median = 1.0 / fps if times is None else 1.0
        elif len(steps) % 2:
            median = steps[len(steps) // 2]
        else:
            median = (steps[len(steps) // 2 - 1] + steps[len(steps) // 2]) / 2.0
        t_end = (distinct[-1] - t0) + median
    if times is None:
        count = max(0, math.ceil(t_end * fps - 1e-6))
        starts = [k / fps for k in range(count)]
        ends = [min((k + 1) / fps, t_end) for k in range(count)]
    else:
        starts = sorted({t for t in times if math.isfinite(t) and 0 <= t < t_end})
        ends = starts[1:] + [t_end]
    rows = []
    for start, end in zip(starts, ends):
        shown = max(p for p, _ in finite if p <= t0 + start + 1e-6)
        frame = min(i for p, i in finite if p == shown)
        if rows and rows[-1][0] == frame:
            rows[-1][2] = end
        else:
            rows.append([frame, start, end])
    return [r[0] for r in rows], [[r[1], r[2]] for r in rows]


def assert_matches_reference(result, expected):
    indices, intervals = result
    expected_indices, expected_intervals = expected
    assert indices.dtype == np.int64 and intervals.dtype == np.float64
    assert indices.tolist() == expected_indices
    assert intervals.shape == (len(expected_indices), 2)
    np.testing.assert_array_equal(intervals, np.asarray(expected_intervals, dtype=np.float64).reshape(-1, 2))


# --- hypothesis strategies: irregular VFR pts with duplicates, gaps, offsets, NaN ----------


@st.composite
def pts_arrays(draw):
    steps = draw(
        st.lists(
            st.one_of(
                st.just(0.0),  # duplicates
                st.floats(0.001, 0.5),  # irregular VFR
                st.sampled_from([1 / 30, 1 / 25, 1001 / 30000]),  # CFR steps
                st.floats(1.0, 8.0),  # gaps
            ),
            min_size=0,
            max_size=60,
        )
    )
    start = draw(st.sampled_from([0.0, 0.0, 1.5, 10.0 / 3.0, 1000.25, -2.0]))
    pts = list(start + np.cumsum([0.0] + steps))
    if draw(st.booleans()):
        pts = draw(st.permutations(pts))  # decode order != presentation order (B-frames)
    for _ in range(draw(st.integers(0, 3))):
        pts.insert(draw(st.integers(0, len(pts))), float("nan"))
    return pts


durations = st.one_of(st.just(-1.0), st.just(0.0), st.floats(0.05, 120.0))


@settings(max_examples=300, deadline=None)
@given(pts=pts_arrays(), fps=st.sampled_from([0.5, 1.0, 2.0, 3.0, 29.97, 0.3]), duration=durations)
def test_sample_uniform_matches_reference(pts, fps, duration):
    result = vcd_core.sample_uniform(np.asarray(pts, dtype=np.float64), fps, duration)
    assert_matches_reference(result, reference_select(pts, fps=fps, duration=duration))


@settings(max_examples=300, deadline=None)
@given(
    pts=pts_arrays(),
    times=st.lists(st.one_of(st.floats(-5.0, 150.0), st.just(float("nan")), st.just(1.0)), max_size=20),
    duration=durations,
)
def test_sample_at_times_matches_reference(pts, times, duration):
    result = vcd_core.sample_at_times(
        np.asarray(pts, dtype=np.float64), np.asarray(times, dtype=np.float64), duration
    )
    assert_matches_reference(result, reference_select(pts, times=times, duration=duration))


@settings(max_examples=200, deadline=None)
@given(pts=pts_arrays(), fps=st.sampled_from([0.5, 1.0, 2.0, 29.97]), duration=st.floats(0.05, 120.0))
def test_selection_invariants(pts, fps, duration):
    indices, intervals = vcd_core.sample_uniform(np.asarray(pts, dtype=np.float64), fps, duration)
    assert len(indices) <= math.ceil(duration * fps)
    finite = np.isfinite(np.asarray(pts, dtype=np.float64))
    assert all(finite[i] for i in indices)
    assert len(set(indices.tolist())) == len(indices)  # merged: every frame at most once
    if len(indices):
        assert intervals[0, 0] == 0.0
        assert intervals[-1, 1] <= duration
        assert np.all(intervals[:, 1] > intervals[:, 0])
        np.testing.assert_array_equal(intervals[1:, 0], intervals[:-1, 1])  # contiguous coverage


# --- explicit cases ------------------------------------------------------------------------


def test_ten_seconds_at_one_fps_gives_ten_samples_covering_the_video():
    pts = np.arange(300) / 30.0
    indices, intervals = vcd_core.sample_uniform(pts, 1.0, 10.0)
    assert indices.tolist() == list(range(0, 300, 30))
    np.testing.assert_array_equal(intervals, np.stack([np.arange(10.0), np.arange(1.0, 11.0)], axis=1))
    # The same without an explicit duration: the end is last pts + one frame step.
    indices, intervals = vcd_core.sample_uniform(pts, 1.0)
    assert len(indices) == 10 and intervals[-1, 1] == pytest.approx(10.0)


def test_ten_point_two_seconds_gives_eleven_samples_last_one_short():
    indices, intervals = vcd_core.sample_uniform(np.arange(306) / 30.0, 1.0, 10.2)
    assert len(indices) == 11
    assert intervals[-1].tolist() == pytest.approx([10.0, 10.2])


def test_ntsc_cfr_and_nonzero_start():
    step = 1001 / 30000
    pts = 3.5 + np.arange(600) * step  # 29.97 fps, first pts 3.5 s
    indices, intervals = vcd_core.sample_uniform(pts, 1.0)
    t_end = 599 * step + step
    assert len(indices) == math.ceil(t_end)  # 20.02 s -> 21 samples
    # Frame shown at t = k s is the last one with pts <= 3.5 + k.
    expected = [int(np.searchsorted(pts, pts[0] + k + 1e-6, side="right")) - 1 for k in range(21)]
    assert indices.tolist() == expected
    assert intervals[-1, 1] == pytest.approx(t_end)
    # Sampling at the video's own rate keeps every frame exactly once.
    indices, intervals = vcd_core.sample_uniform(pts, 30000 / 1001)
    assert indices.tolist() == list(range(600))
    np.testing.assert_allclose(intervals[:, 0], np.arange(600) * step, atol=1e-9)


def test_gap_produces_one_merged_interval():
    pts = np.concatenate([np.arange(0, 2, 0.5), np.arange(7, 10, 0.5)])  # nothing in (1.5, 7)
    indices, intervals = vcd_core.sample_uniform(pts, 1.0, 10.0)
    # t = 2..6 all show the frame at pts 1.5 (index 3): one row [2, 7) instead of five.
    assert indices.tolist() == [0, 2, 3, 4, 6, 8]
    np.testing.assert_array_equal(intervals, [[0, 1], [1, 2], [2, 7], [7, 8], [8, 9], [9, 10]])


def test_duplicates_pick_first_in_input_order_and_nan_is_skipped():
    pts = np.array([np.nan, 1.0, 0.0, 0.0, 1.0, 2.0])
    indices, intervals = vcd_core.sample_uniform(pts, 1.0)
    assert indices.tolist() == [2, 1, 5]
    np.testing.assert_array_equal(intervals, [[0, 1], [1, 2], [2, 3]])


@pytest.mark.parametrize("pts", [np.array([]), np.array([np.nan, np.nan])])
def test_no_finite_pts_selects_nothing(pts):
    indices, intervals = vcd_core.sample_uniform(pts, 1.0, 5.0)
    assert indices.shape == (0,) and intervals.shape == (0, 2)


def test_single_frame_without_duration_lasts_one_sample():
    indices, intervals = vcd_core.sample_uniform(np.array([4.0]), 2.0)
    assert indices.tolist() == [0] and intervals.tolist() == [[0.0, 0.5]]


def test_sample_at_times_sorts_dedupes_and_clips():
    pts = np.arange(100) / 10.0  # 10 s
    indices, intervals = vcd_core.sample_at_times(pts, np.array([5.0, -1.0, 2.0, 5.0, 10.0, np.nan]))
    assert indices.tolist() == [20, 50]
    np.testing.assert_allclose(intervals, [[2.0, 5.0], [5.0, 10.0]])


@pytest.mark.parametrize(
    ("fps", "shown"), [(0.0, "0"), (-1.5, "-1.5"), (float("nan"), "nan"), (float("inf"), "inf")]
)
def test_bad_fps_raises_value_error_with_value(fps, shown):
    with pytest.raises(ValueError, match=re.escape(f"fps must be finite and > 0, got {shown}")):
        vcd_core.sample_uniform(np.arange(10.0), fps)


def test_bad_duration_and_shape_raise_value_error():
    with pytest.raises(ValueError, match="duration must be finite"):
        vcd_core.sample_uniform(np.arange(10.0), 1.0, float("nan"))
    with pytest.raises(ValueError, match="pts must be 1-D, got 2 dimensions"):
        vcd_core.sample_uniform(np.zeros((2, 2)), 1.0)


# --- Python wrapper ---------------------------------------------------------------------


def test_select_frames_uniform_and_times():
    pts = np.arange(50) / 5.0
    selection = select_frames(pts, SamplingPolicy(fps=1.0))
    assert isinstance(selection, FrameSelection) and len(selection) == 10
    assert selection.indices.tolist() == list(range(0, 50, 5))
    selection = select_frames(pts.tolist(), SamplingPolicy(times=[3.0, 1.0]), duration=4.0)
    assert selection.indices.tolist() == [5, 15]
    assert selection.intervals.tolist() == [[1.0, 3.0], [3.0, 4.0]]


def test_sampling_policy_normalises_and_validates():
    assert SamplingPolicy(times=[1, 2.5]).times == (1.0, 2.5)
    with pytest.raises(ValueError, match=r"fps must be finite and > 0, got 0"):
        SamplingPolicy(fps=0)
    with pytest.raises(ValueError, match=r"fps must be finite and > 0, got nan"):
        SamplingPolicy(fps=float("nan"))
    with pytest.raises(ValueError, match=r"times must be finite and >= 0, got \[-1\.0\]"):
        SamplingPolicy(times=(0.0, -1.0))
    with pytest.raises(ValueError, match="pts must be 1-D"):
        select_frames(np.zeros((3, 2)), SamplingPolicy())
    with pytest.raises(ValueError, match="duration must be finite or None, got inf"):
        select_frames(np.arange(3.0), SamplingPolicy(), duration=float("inf"))
