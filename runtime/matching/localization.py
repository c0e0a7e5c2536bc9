"""Temporal localisation: copied segments of one (query, reference) pair from descriptor sequences.

The method follows the temporal network (TN) alignment of VCSL (Tan et al., ACM MM 2009) that
the vsc2022 baseline runs through ``vcsl.vta.tn``; this is an independent implementation with a
dynamic programme in place of networkx:

1. similarity matrix ``S = Q R^T`` (inner products, so score-normalised descriptors from
   ``runtime.postprocess.score_normalization`` give score-normalised similarities);
2. nodes: for every query sample, its ``top_k`` reference samples with ``S >= min_similarity``;
3. edges: node (i, j) may follow node (i', j') when ``1 <= i - i' <= max_step`` and
   ``1 <= j - j' <= max_step``, i.e. the path moves forward in both videos. A step of 2 in one
   axis per step of 1 in the other covers 0.5x-2x speed changes; larger steps bridge gaps
   of up to ``max_step - 1`` samples where the copy was edited or the match is weak;
4. the highest-gain path (gain of a node = ``S - min_similarity``, so every admissible node
   lengthens the path) is taken with a DP over query rows in order; its box (query range x
   reference range) is removed and the next path is searched, up to ``max_segments`` boxes.
   A path that fails the filters only removes its own nodes, as TN does;
5. filters: both spans at least ``min_segment_seconds``, the ratio of the two spans within
   ``max_speed_ratio`` (rejects degenerate near-vertical/horizontal paths), and the mean
   similarity along the path at least ``min_mean_similarity``.

Segments span from the start of the first aligned sample to the end of the last one, in each
video, using the descriptors' own timestamps.

Note [segment score]: the default score is the maximum similarity along the path, the score
of the baseline's ``VCSLLocalizationMaxSim`` (used with score normalisation, where
it reached matching-track AP 0.469 on the training set). ``"mean"`` is available and is more
robust to a single coincidental frame but penalises copies whose edits vary over time. With
``candidate_score_weight = w > 0`` the reported score is ``(1 - w) * segment + w * candidate``,
mixing in the retrieval score of the pair (the baseline without score normalisation uses the
candidate score alone, i.e. ``w = 1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.records import Match

_AGGREGATIONS = ("max", "mean")


class SegmentMatch(NamedTuple):
    """One copied segment of a (query, reference) pair, in seconds."""

    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float


@dataclass(frozen=True)
class LocalizationConfig:
    """Parameters of the temporal alignment.

    The defaults target score-normalised descriptors (``runtime.postprocess.score_normalization``, beta 1.2,
    k 10, mean) sampled at about 1 descriptor per second; they are untuned starting points taken
    from the baseline's TN settings (``tn_max_step=5``, ``tn_top_k=5``, ``max_path=10``) and
    should be re-tuned on the training ground truth. For raw cosine similarities raise
    ``min_similarity`` to roughly the level unrelated frames never reach (e.g. 0.3-0.5).

    Attributes:
        min_similarity: nodes need at least this similarity. 0 is the natural zero point of
            score-normalised similarity: the pair is more similar than the query is to typical
            training references (times beta).
        top_k: reference samples kept per query sample (TN's ``tn_top_k``).
        max_step: largest index step between consecutive path nodes, per axis (TN's
            ``tn_max_step``, here inclusive); 2 is the least that allows 2x speed changes.
        min_segment_seconds: both the query and the reference span of a segment must be at
            least this long (start of first to end of last sample).
        max_speed_ratio: largest allowed ratio between the two spans of a segment.
        min_mean_similarity: the mean similarity along a path must reach this.
        max_segments: most segments reported per pair.
        max_iou: a path whose box overlaps an accepted box by more than this IoU is dropped.
        score_aggregation: ``"max"`` or ``"mean"`` similarity along the path (Note [segment score]).
        candidate_score_weight: weight ``w`` of the candidate score in the reported score.
    """

    min_similarity: float = 0.0
    top_k: int = 5
    max_step: int = 5
    min_segment_seconds: float = 3.0
    max_speed_ratio: float = 3.0
    min_mean_similarity: float = 0.0
    max_segments: int = 5
    max_iou: float = 0.3
    score_aggregation: Literal["max", "mean"] = "max"
    candidate_score_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("top_k", "max_segments"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.max_step, bool) or not isinstance(self.max_step, (int, np.integer)) or self.max_step < 2:
            raise ValueError(f"max_step must be an integer >= 2 (2 allows 2x speed changes), got {self.max_step!r}")
        if not self.min_segment_seconds >= 0:
            raise ValueError(f"min_segment_seconds must be >= 0, got {self.min_segment_seconds}")
        if not self.max_speed_ratio >= 1:
            raise ValueError(f"max_speed_ratio must be >= 1, got {self.max_speed_ratio}")
        if not 0 <= self.max_iou <= 1:
            raise ValueError(f"max_iou must be in [0, 1], got {self.max_iou}")
        if self.score_aggregation not in _AGGREGATIONS:
            raise ValueError(f"score_aggregation must be one of {_AGGREGATIONS}, got {self.score_aggregation!r}")
        if not 0 <= self.candidate_score_weight <= 1:
            raise ValueError(f"candidate_score_weight must be in [0, 1], got {self.candidate_score_weight}")
        for name in ("min_similarity", "min_mean_similarity"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")


def _select_nodes(similarity: np.ndarray, config: LocalizationConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k reference samples per query sample above the threshold, sorted by (query, ref)."""
    n_ref = similarity.shape[1]
    k = min(config.top_k, n_ref)
    # Only rows with some similarity above the threshold can hold nodes; unrelated pairs stop here.
    rows = np.flatnonzero((similarity >= config.min_similarity).any(axis=1))
    similarity = similarity[rows]
    if k < n_ref:
        ref_idx = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    else:
        ref_idx = np.broadcast_to(np.arange(n_ref), (len(rows), n_ref))
    query_idx = np.broadcast_to(rows[:, None], ref_idx.shape)
    sims = np.take_along_axis(similarity, ref_idx, axis=1)
    keep = sims >= config.min_similarity
    qi, rj, s = query_idx[keep], ref_idx[keep], sims[keep]
    order = np.lexsort((rj, qi))
    return qi[order].astype(np.int64), rj[order].astype(np.int64), s[order].astype(np.float64)


def _best_path(qi: np.ndarray, rj: np.ndarray, gain: np.ndarray, alive: np.ndarray, max_step: int) -> list[int]:
    """Node indices of the highest-gain forward path among the alive nodes.

    DP in query order, one query row at a time: nodes are sorted by (query, ref), so the
    candidate parents of a row (rows ``i - max_step .. i - 1``) form one contiguous slice.
    """
    n = len(qi)
    value = np.full(n, -np.inf)
    parent = np.full(n, -1, dtype=np.int64)
    rows, row_starts = np.unique(qi, return_index=True)
    row_ends = np.append(row_starts[1:], n)
    pred_starts = np.searchsorted(qi, rows - max_step, side="left")
    for lo, hi, pred_lo in zip(row_starts, row_ends, pred_starts):
        row_alive = alive[lo:hi]
        if not row_alive.any():
            continue
        row_value = np.where(row_alive, gain[lo:hi], -np.inf)
        if pred_lo < lo:
            step = rj[lo:hi, None] - rj[None, pred_lo:lo]
            ok = (step >= 1) & (step <= max_step)
            candidates = np.where(ok, value[None, pred_lo:lo], -np.inf)
            best = np.argmax(candidates, axis=1)
            best_value = candidates[np.arange(hi - lo), best]
            # Gains are positive, so any alive predecessor improves on starting a new path.
            extend = row_alive & np.isfinite(best_value)
            row_value = np.where(extend, row_value + best_value, row_value)
            parent[lo:hi] = np.where(extend, pred_lo + best, -1)
        value[lo:hi] = row_value
    if not np.isfinite(value).any():
        return []
    node = int(np.argmax(value))
    path = []
    while node >= 0:
        path.append(node)
        node = int(parent[node])
    return path[::-1]


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two inclusive index boxes (q0, r0, q1, r1)."""
    dq = min(a[2], b[2]) - max(a[0], b[0]) + 1
    dr = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if dq <= 0 or dr <= 0:
        return 0.0
    inter = dq * dr
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def _span(timestamps: np.ndarray, first: int, last: int) -> tuple[float, float]:
    return float(timestamps[first, 0]), float(timestamps[last, 1])


def localize_pair(
    query: VideoDescriptors,
    ref: VideoDescriptors,
    config: LocalizationConfig = LocalizationConfig(),
    candidate_score: float | None = None,
) -> list[SegmentMatch]:
    """Copied segments between one query and one reference.

    Args:
        query: query descriptors (score-normalised or not, see ``LocalizationConfig``).
        ref: reference descriptors of the same dimension.
        config: alignment parameters.
        candidate_score: retrieval score of the pair, mixed in when
            ``config.candidate_score_weight > 0`` (required then).

    Returns:
        Segments in seconds, best score first; empty when nothing passes the filters.

    Raises:
        ValueError: on mismatched dimensions, or a candidate weight without a candidate score.
    """
    if query.dim != ref.dim:
        raise ValueError(f"query {query.video_id} has dim {query.dim} but ref {ref.video_id} has dim {ref.dim}")
    if config.candidate_score_weight > 0 and candidate_score is None:
        raise ValueError(
            f"candidate_score_weight={config.candidate_score_weight} needs the pair's candidate_score, got None"
        )
    if len(query) == 0 or len(ref) == 0:
        return []
    similarity = np.asarray(query.features, dtype=np.float32) @ np.asarray(ref.features, dtype=np.float32).T
    qi, rj, s = _select_nodes(similarity, config)
    if len(qi) == 0:
        return []
    gain = s - config.min_similarity
    # A zero gain would never extend a path (parents need a positive value); keep such nodes usable.
    gain = np.maximum(gain, 1e-6)
    alive = np.ones(len(qi), dtype=bool)
    q_times = np.asarray(query.timestamps, dtype=np.float64)
    r_times = np.asarray(ref.timestamps, dtype=np.float64)

    boxes: list[tuple[int, int, int, int]] = []
    segments: list[SegmentMatch] = []
    # Each attempt removes at least one node, and rejected paths are bounded by a few per box.
    max_attempts = 4 * config.max_segments
    for _ in range(max_attempts):
        if len(boxes) >= config.max_segments or not alive.any():
            break
        path = _best_path(qi, rj, gain, alive, config.max_step)
        if not path:
            break
        nodes = np.asarray(path)
        q0, q1 = int(qi[nodes].min()), int(qi[nodes].max())
        r0, r1 = int(rj[nodes].min()), int(rj[nodes].max())
        path_sims = s[nodes]
        q_start, q_end = _span(q_times, q0, q1)
        r_start, r_end = _span(r_times, r0, r1)
        q_len, r_len = q_end - q_start, r_end - r_start
        box = (q0, r0, q1, r1)
        accepted = (
            min(q_len, r_len) >= config.min_segment_seconds
            and max(q_len, r_len) <= config.max_speed_ratio * max(min(q_len, r_len), 1e-9)
            and float(path_sims.mean()) >= config.min_mean_similarity
            and all(_box_iou(box, other) <= config.max_iou for other in boxes)
        )
        if not accepted:
            alive[nodes] = False
            continue
        boxes.append(box)
        alive &= ~((qi >= q0) & (qi <= q1) & (rj >= r0) & (rj <= r1))
        score = float(path_sims.max() if config.score_aggregation == "max" else path_sims.mean())
        if config.candidate_score_weight > 0:
            w = config.candidate_score_weight
            score = (1 - w) * score + w * float(candidate_score)  # type: ignore[arg-type]
        segments.append(SegmentMatch(q_start, q_end, r_start, r_end, score))
    segments.sort(key=lambda m: m.score, reverse=True)
    return segments


def localize(
    queries: Sequence[VideoDescriptors] | Mapping[str, VideoDescriptors],
    refs: Sequence[VideoDescriptors] | Mapping[str, VideoDescriptors],
    candidate_pairs: Iterable[tuple[str, str, float]],
    config: LocalizationConfig = LocalizationConfig(),
) -> list[Match]:
    """Localise copied segments for many candidate pairs.

    Args:
        queries: query descriptors, as a sequence or a mapping by video id.
        refs: reference descriptors, as a sequence or a mapping by video id.
        candidate_pairs: ``(query_id, ref_id, candidate_score)`` tuples, e.g. from ``runtime.search.index``.
            A pair listed twice is localised once (first occurrence wins).
        config: alignment parameters.

    Returns:
        ``Match`` rows ``(query_id, ref_id, query_start, query_end, ref_start, ref_end, score)`` in
        candidate order, each pair's segments best first.

    Raises:
        KeyError: when a candidate names a video missing from ``queries`` or ``refs``.
    """
    query_by_id = queries if isinstance(queries, Mapping) else {q.video_id: q for q in queries}
    ref_by_id = refs if isinstance(refs, Mapping) else {r.video_id: r for r in refs}
    rows: list[Match] = []
    seen: set[tuple[str, str]] = set()
    for query_id, ref_id, candidate_score in candidate_pairs:
        if (query_id, ref_id) in seen:
            continue
        seen.add((query_id, ref_id))
        if query_id not in query_by_id:
            raise KeyError(f"candidate query {query_id!r} has no descriptors")
        if ref_id not in ref_by_id:
            raise KeyError(f"candidate reference {ref_id!r} has no descriptors")
        for m in localize_pair(query_by_id[query_id], ref_by_id[ref_id], config, candidate_score=candidate_score):
            rows.append(Match(query_id, ref_id, *(float(v) for v in m)))
    return rows
