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
from runtime.postprocess.budget import BudgetConfig, select_samples
from runtime.postprocess.postprocessor import Postprocessor
from runtime.postprocess.projection import l2_normalize
from runtime.records import VideoEmbeddings


def _select_at_most(features: np.ndarray, count: int, config: BudgetConfig) -> np.ndarray:
    """``select_samples`` with an explicit cap: at one descriptor per second, a duration of
    ``count`` seconds has the cap ``count``."""
    if count <= 0 or len(features) == 0:
        return np.zeros((0,), dtype=np.int64)
    return select_samples(features, float(count), BudgetConfig(1.0, config.duplicate_similarity))


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
    cap = config.cap(duration)
    labels = np.unique(views)
    rows = {int(label): np.flatnonzero(views == label) for label in labels}
    quota = {int(label): cap // len(labels) + (1 if i < cap % len(labels) else 0) for i, label in enumerate(labels)}
    kept: dict[int, np.ndarray] = {}
    for _ in range(len(labels) + 1):  # each round either fills the cap or retires a view
        kept = {label: members[_select_at_most(features[members], quota[label], config)] for label, members in rows.items()}
        spare = cap - sum(len(k) for k in kept.values())
        hungry = [label for label in rows if len(kept[label]) == quota[label] < len(rows[label])]
        if spare <= 0 or not hungry:
            break
        for label in rows:  # a view that could not fill its quota keeps what it found
            quota[label] = len(kept[label])
        for i, label in enumerate(hungry):
            quota[label] += spare // len(hungry) + (1 if i < spare % len(hungry) else 0)
    keep = np.sort(np.concatenate([kept[label] for label in rows])) if kept else np.zeros((0,), dtype=np.int64)
    if len(keep) > cap:
        raise AssertionError(f"budget bug: kept {len(keep)} rows for a cap of {cap}")
    return keep


@dataclass
class LayoutPostprocessor(Postprocessor):
    """``Postprocessor`` that shares the budget among layout views (plain videos are unchanged)."""

    def __call__(self, video: VideoEmbeddings, duration: float | None = None) -> VideoDescriptors:
        if video.views is None or len(np.unique(video.views)) <= 1:
            return super().__call__(video, duration)
        features = video.embeddings
        self.output_dim(features.shape[1])
        features = self.projection.apply(features) if self.projection is not None else l2_normalize(features)
        if duration is None:
            duration = video.info.duration if video.info.duration > 0 else float(video.intervals[:, 1].max()) if len(video.intervals) else 0.0
        keep = select_by_view(features, video.views, duration, self.budget)
        order = keep[np.lexsort((video.views[keep], video.intervals[keep, 0]))]  # time order, views of a frame together
        return VideoDescriptors(
            video_id=video.video_id,
            timestamps=video.intervals[order].astype(np.float32),
            features=np.ascontiguousarray(features[order], dtype=np.float32),
        )
