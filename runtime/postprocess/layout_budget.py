"""The per-video budget shared among layout views (whole frame, cells, window, turned views).

A video of d seconds keeps at most ``BudgetConfig.cap(d)`` descriptors whatever its views
(Note [Layout views are per video] in ``runtime/preprocess/layout.py``): the cap is split
evenly among its views (earlier views get the remainder), each view keeps its samples by
content change with near-duplicate pruning (``select_samples``), and slots a view cannot use
(too few distinct samples) go to the other views in turn. The whole budget is never exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.postprocess.budget import BudgetConfig, select_count
from runtime.postprocess.postprocessor import Postprocessor
from runtime.postprocess.projection import l2_normalize
from runtime.records import VideoEmbeddings


def select_by_view(features: np.ndarray, views: np.ndarray, duration: float, config: BudgetConfig) -> np.ndarray:
    """Rows to keep, the video's cap shared among its views.

    Args:
        features: (K, D) L2-normalised descriptors of every (sample, view) row.
        views: int (K,) view of each row (0 = whole picture).
        duration: the video's duration (the cap's basis).
        config: the per-video budget rules.

    Returns:
        Sorted row indices, at most ``config.cap(duration)`` of them.
    """
    views = np.asarray(views)
    if views.shape != (len(features),):
        raise ValueError(f"views must have shape ({len(features)},), got {views.shape}")
    labels = [int(label) for label in np.unique(views)]
    rows = {label: np.flatnonzero(views == label) for label in labels}
    return _fill_cap(config.cap(duration), rows, np.ones(len(labels)),
                     lambda label, count: rows[label][select_count(features[rows[label]], count, config.duplicate_similarity)])


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``weights`` (integers summing to ``total``; ties go to earlier groups)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    shares = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[: total - int(shares.sum())]] += 1
    return shares


def _fill_cap(cap: int, members: dict[int, np.ndarray], weights: np.ndarray, pick) -> np.ndarray:
    """Rows kept when ``cap`` is shared among groups of rows in proportion to ``weights``.

    ``pick(group, count)`` returns at most ``count`` of the group's rows. Slots a group cannot use
    (``pick`` returned fewer than its quota) go evenly to the groups that filled theirs and have rows
    left; each round either fills the cap or retires a group.
    """
    groups = list(members)
    quota = dict(zip(groups, _largest_remainder(cap, weights).tolist()))
    kept: dict[int, np.ndarray] = {}
    for _ in range(len(groups) + 1):
        kept = {g: pick(g, quota[g]) for g in groups}
        spare = cap - sum(len(k) for k in kept.values())
        hungry = [g for g in groups if len(kept[g]) == quota[g] < len(members[g])]
        if spare <= 0 or not hungry:
            break
        for g in groups:  # a group that could not fill its quota keeps what it found
            quota[g] = len(kept[g])
        for g, extra in zip(hungry, _largest_remainder(spare, np.ones(len(hungry))).tolist()):
            quota[g] += extra
    keep = np.sort(np.concatenate([kept[g] for g in groups])) if kept else np.zeros((0,), dtype=np.int64)
    if len(keep) > cap:
        raise AssertionError(f"budget bug: kept {len(keep)} rows for a cap of {cap}")
    return keep


def _evenly(rows: np.ndarray, count: int) -> np.ndarray:
    """``count`` of ``rows`` (time order) spread evenly: the middle of each of ``count`` equal stretches."""
    if count <= 0:
        return rows[:0]
    return rows[((np.arange(count) + 0.5) * len(rows) / count).astype(np.int64)]


def _picture_samples(views: np.ndarray) -> int:
    """A group's weight in the budget: its samples times the pictures it shows (its part views,
    or 1 for whole frames only); each view has one row per sample."""
    counts = np.bincount(views.astype(np.int64))
    parts = np.count_nonzero(counts[1:])
    return int(counts.max()) * max(1, parts)


def select_by_window(features: np.ndarray, windows: np.ndarray, views: np.ndarray, duration: float, config: BudgetConfig,
                     spread: str = "even") -> np.ndarray:
    """Rows to keep when the layout was decided per time window (Note [Layout windows]).

    The video's cap is split among groups in proportion to their picture-seconds: all whole-frame
    rows of windows without parts form one group (so a plain video keeps exactly what
    ``select_samples`` keeps) weighing its samples; each window with parts is a group of its own
    weighing its samples times its parts (two stacked pictures get the descriptor density of two
    videos), whose share is then split among its views. Slots a group cannot use go to the others.

    Args:
        features: (K, D) L2-normalised descriptors of every (sample, view) row.
        windows: int (K,) window of each row.
        views: int (K,) view of each row within its window (0 = whole picture).
        duration: the video's duration (the cap's basis).
        config: the per-video budget rules.
        spread: how a window with parts picks its rows: ``even`` (each view's share spread evenly
            over time: with a few slots per view, content change would pick the window's
            boundaries) or ``change`` (``select_by_view``).

    Returns:
        Sorted row indices, at most ``config.cap(duration)`` of them.
    """
    if spread not in ("even", "change"):
        raise ValueError(f"spread must be 'even' or 'change', got {spread!r}")
    windows, views = np.asarray(windows), np.asarray(views)
    if windows.shape != (len(features),) or views.shape != (len(features),):
        raise ValueError(f"windows and views must have shape ({len(features)},), got {windows.shape} and {views.shape}")
    cap = config.cap(duration)
    split = {int(w) for w in np.unique(windows) if np.any(views[windows == w] != 0)}
    group_of = np.where(np.isin(windows, list(split)), windows + 1, 0)  # 0 = the plain group
    groups = [int(g) for g in np.unique(group_of)]
    members = {g: np.flatnonzero(group_of == g) for g in groups}
    def pick(group: int, count: int) -> np.ndarray:
        rows = members[group]
        if group == 0:
            return rows[select_count(features[rows], count, config.duplicate_similarity)]
        if spread == "even":
            labels = np.unique(views[rows])
            shares = _largest_remainder(min(count, len(rows)), np.array([np.count_nonzero(views[rows] == v) for v in labels]))
            return np.sort(np.concatenate([_evenly(rows[views[rows] == v], n) for v, n in zip(labels, shares)]))
        return rows[select_by_view(features[rows], views[rows], float(count), BudgetConfig(1.0, config.duplicate_similarity))]

    return _fill_cap(cap, members, np.array([_picture_samples(views[members[g]]) for g in groups]), pick)


@dataclass
class LayoutPostprocessor(Postprocessor):
    """``Postprocessor`` that shares the budget among layout views (plain videos are unchanged).

    Rows with ``windows`` (views decided per time window, Note [Layout windows]) go through
    ``select_by_window`` (``spread``), rows with ``views`` only through ``select_by_view``; the
    output is in time order, the views of a sample together, and never over ``budget.cap``.
    """

    spread: str = "even"
    whole_in_split: bool = False  # keep the whole frame of a window with parts (measured: the parts alone do better)

    def __call__(self, video: VideoEmbeddings, duration: float | None = None) -> VideoDescriptors:
        windowed = video.windows is not None
        if not windowed and (video.views is None or len(np.unique(video.views)) <= 1):
            return super().__call__(video, duration)
        if video.views is None:
            raise ValueError(f"{video.video_id}: rows with windows must have views too")
        features = video.embeddings
        self.output_dim(features.shape[1])
        features = self.projection.apply(features) if self.projection is not None else l2_normalize(features)
        if duration is None:
            duration = video.info.duration if video.info.duration > 0 else float(video.intervals[:, 1].max()) if len(video.intervals) else 0.0
        if windowed:
            rows = np.arange(len(features))
            if not self.whole_in_split:
                rows = np.flatnonzero(~((video.views == 0) & np.isin(video.windows, np.unique(video.windows[video.views != 0]))))
            keep = rows[select_by_window(features[rows], video.windows[rows], video.views[rows], duration, self.budget, self.spread)]
        else:
            keep = select_by_view(features, video.views, duration, self.budget)
        order = keep[np.lexsort((video.views[keep], video.intervals[keep, 0]))]  # time order, views of a frame together
        return VideoDescriptors(
            video_id=video.video_id,
            timestamps=video.intervals[order].astype(np.float32),
            features=np.ascontiguousarray(features[order], dtype=np.float32),
        )
