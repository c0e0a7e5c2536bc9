"""The per-window layout budget (``select_by_window``): never over the cap, plain videos unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.postprocess.budget import BudgetConfig, select_samples
from runtime.postprocess.layout_budget import select_by_window

CONFIG = BudgetConfig(duplicate_similarity=0.9)


def _unit_rows(rng: np.random.Generator, count: int, dim: int = 24) -> np.ndarray:
    x = rng.normal(size=(count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@st.composite
def _layouts(draw):
    """(windows, views) of a video: consecutive windows, each plain or split into 2-5 views."""
    windows, views = [], []
    for w in range(draw(st.integers(1, 5))):
        samples = draw(st.integers(1, 20))
        parts = draw(st.sampled_from([1, 1, 2, 3, 5]))
        windows += [w] * samples * parts
        views += list(range(parts)) * samples  # rows of one sample together, as the pipeline writes them
    return np.asarray(windows), np.asarray(views)


@settings(max_examples=60, deadline=None)
@given(layout=_layouts(), seconds=st.floats(0.0, 60.0), seed=st.integers(0, 2**16), spread=st.sampled_from(["even", "change"]))
def test_never_over_the_cap_and_rows_sorted_unique(layout, seconds, seed, spread):
    windows, views = layout
    features = _unit_rows(np.random.default_rng(seed), len(windows))
    keep = select_by_window(features, windows, views, seconds, CONFIG, spread)
    assert len(keep) <= CONFIG.cap(seconds)
    assert np.array_equal(keep, np.unique(keep))
    assert keep.size == 0 or (keep.min() >= 0 and keep.max() < len(windows))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=5), seconds=st.floats(0.5, 60.0), seed=st.integers(0, 2**16))
def test_a_plain_video_keeps_what_select_samples_keeps(sizes, seconds, seed):
    windows = np.repeat(np.arange(len(sizes)), sizes)
    features = _unit_rows(np.random.default_rng(seed), len(windows))
    keep = select_by_window(features, windows, np.zeros(len(windows), int), seconds, CONFIG)
    assert np.array_equal(keep, select_samples(features, seconds, CONFIG))


def test_the_cap_is_shared_by_samples_and_a_split_window_spreads_its_views_evenly():
    # 20 plain samples, then a 20-sample window split into whole + 2 cells (60 rows); all distinct.
    windows = np.concatenate([np.zeros(20, int), np.ones(60, int)])
    views = np.concatenate([np.zeros(20, int), np.tile([0, 1, 2], 20)])
    features = np.eye(80, dtype=np.float32)  # orthogonal rows: nothing is a near-duplicate
    keep = select_by_window(features, windows, views, 20.0, CONFIG)
    assert len(keep) == 20
    assert np.count_nonzero(windows[keep] == 0) == 7  # 20 of 60 picture-seconds (the stack shows 2 pictures)
    split = keep[windows[keep] == 1]
    per_view = [np.flatnonzero(views[split] == v) for v in range(3)]
    assert sorted(len(p) for p in per_view) == [4, 4, 5]
    for v in range(3):
        samples = (split[views[split] == v] - 20) // 3
        gaps = np.diff(np.concatenate([[-1], samples, [20]]))
        assert gaps.max() <= 20 // len(samples) + 2, (v, samples)  # spread over the window, not bunched


def test_parts_alone_weigh_their_pictures():
    # Without the whole view (parts replace it) the split window still weighs samples x parts.
    windows = np.concatenate([np.zeros(20, int), np.ones(40, int)])
    views = np.concatenate([np.zeros(20, int), np.tile([1, 2], 20)])
    keep = select_by_window(np.eye(60, dtype=np.float32), windows, views, 30.0, CONFIG)
    assert len(keep) == 30 and np.count_nonzero(windows[keep] == 0) == 10


def test_slots_a_group_cannot_use_go_to_the_others():
    # The plain part is one repeated picture: it keeps 1 row, the split window takes the rest.
    windows = np.concatenate([np.zeros(10, int), np.ones(40, int)])
    views = np.concatenate([np.zeros(10, int), np.tile([0, 1], 20)])
    features = np.concatenate([np.tile(np.eye(60, dtype=np.float32)[:1], (10, 1)), np.eye(60, dtype=np.float32)[10:50]])
    keep = select_by_window(features, windows, views, 20.0, CONFIG)
    assert np.count_nonzero(windows[keep] == 0) == 1
    assert len(keep) == 20


def test_bad_arguments():
    features = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        select_by_window(features, np.zeros(3, int), np.zeros(4, int), 4.0, CONFIG)
    with pytest.raises(ValueError, match="spread"):
        select_by_window(features, np.zeros(4, int), np.zeros(4, int), 4.0, CONFIG, "random")
