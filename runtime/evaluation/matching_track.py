"""Matching-track metric: segment-level micro AP (the VCSL-style metric of VSC 2022).

Semantics follow ``vsc2022/vsc/metrics.py:match_metric``:

* Predictions are processed in descending score order; all predictions sharing one score
  are added together before precision/recall are measured.
* Per (query, reference) pair and per axis (query time, reference time) the predicted
  intervals are merged into a union. Only ground-truth boxes that overlap (positive 2-D
  area) at least one prediction of the pair so far count towards the intersection; the
  intersection is the 1-D overlap of the prediction union with the union of those boxes.
* Intersections, predicted lengths and ground-truth lengths are summed over all pairs
  (micro averaging), so predictions for pairs without ground truth only add predicted
  length, i.e. lower precision.
* Per axis ``precision = intersection / predicted length`` and
  ``recall = intersection / ground-truth length``; the pair-free P and R are the geometric
  means over the two axes, and ``AP = sum_i P(i) * (R(i) - R(i-1))``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.records import Match

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class MatchingTrackResult:
    """Matching-track metrics.

    Attributes:
        ap: segment-level micro AP, the track's main metric.
        precisions, recalls, scores: the precision-recall curve, one point per score level
            at which recall increased.
        pairwise_uap: auxiliary video-pair micro AP (each pair scored by its best match),
            which ignores localisation.
        num_predictions: number of predictions scored.
    """

    ap: float
    precisions: np.ndarray
    recalls: np.ndarray
    scores: np.ndarray
    pairwise_uap: float
    num_predictions: int


def _merged_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals as sorted disjoint intervals (touching intervals are merged)."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _total_length(merged: Sequence[tuple[float, float]]) -> float:
    return sum(end - start for start, end in merged)


def _intersection_length(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """Length of the intersection of two unions, as |A| + |B| - |A u B| (as the official code)."""
    return _total_length(a) + _total_length(b) - _total_length(_merged_intervals([*a, *b]))


_AXES = ((lambda m: (m.query_start, m.query_end)), (lambda m: (m.ref_start, m.ref_end)))


@dataclass
class _PairState:
    """Ground truth and predictions of one (query, reference) pair so far."""

    gts: list[Match] = field(default_factory=list)
    preds: list[Match] = field(default_factory=list)
    gt_considered: list[bool] = field(default_factory=list)
    intersections: list[float] = field(default_factory=lambda: [0.0, 0.0])
    pred_lengths: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add_predictions(self, new_preds: Sequence[Match]) -> tuple[list[float], list[float]]:
        """Add predictions; returns per-axis changes of (intersection, predicted length)."""
        self.preds.extend(new_preds)
        # A box overlapping an earlier prediction was already marked, so only the new ones
        # need checking.
        for i, gt in enumerate(self.gts):
            if not self.gt_considered[i] and any(gt.overlaps(p) for p in new_preds):
                self.gt_considered[i] = True
        considered = [gt for gt, c in zip(self.gts, self.gt_considered) if c]
        intersection_deltas, length_deltas = [0.0, 0.0], [0.0, 0.0]
        for axis, interval in enumerate(_AXES):
            pred_union = _merged_intervals(interval(p) for p in self.preds)
            gt_union = _merged_intervals(interval(g) for g in considered)
            intersection = _intersection_length(pred_union, gt_union) if considered else 0.0
            pred_length = _total_length(pred_union)
            intersection_deltas[axis] = intersection - self.intersections[axis]
            length_deltas[axis] = pred_length - self.pred_lengths[axis]
            self.intersections[axis] = intersection
            self.pred_lengths[axis] = pred_length
        return intersection_deltas, length_deltas


def match_average_precision(
    predictions: Iterable[Match], ground_truth: Iterable[Match]
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Segment-level micro AP.

    Args:
        predictions: predicted matches with scores.
        ground_truth: ground-truth matches (scores ignored).

    Returns:
        (ap, precisions, recalls, scores) where the arrays hold the precision-recall curve
        at each score level that increased recall.

    Raises:
        ValueError: if the ground truth is empty or has zero total length on an axis.
    """
    pairs: defaultdict[tuple[str, str], _PairState] = defaultdict(_PairState)
    for gt in ground_truth:
        state = pairs[gt.pair_id]
        state.gts.append(gt)
        state.gt_considered.append(False)
    if not pairs:
        raise ValueError("ground truth has no matches; the matching metric needs at least one")
    gt_lengths = [
        sum(_total_length(_merged_intervals(interval(g) for g in state.gts)) for state in pairs.values())
        for interval in _AXES
    ]
    if min(gt_lengths) <= 0:
        raise ValueError(f"ground truth total length must be positive on both axes, got (query, ref) = {gt_lengths}")

    predictions = sorted(predictions, key=lambda m: m.score, reverse=True)
    intersections, pred_lengths = [0.0, 0.0], [0.0, 0.0]
    ap = recall = 0.0
    curve_precisions: list[float] = []
    curve_recalls: list[float] = []
    curve_scores: list[float] = []
    for score, group in itertools.groupby(predictions, key=lambda m: m.score):
        by_pair: defaultdict[tuple[str, str], list[Match]] = defaultdict(list)
        for prediction in group:
            by_pair[prediction.pair_id].append(prediction)
        for pair_id, pair_predictions in by_pair.items():
            intersection_deltas, length_deltas = pairs[pair_id].add_predictions(pair_predictions)
            for axis in range(2):
                intersections[axis] += intersection_deltas[axis]
                pred_lengths[axis] += length_deltas[axis]
        recalls = [intersections[a] / gt_lengths[a] for a in range(2)]
        # 0/0 only happens while nothing intersects (zero-length predictions); recall is
        # then 0 too, so the value cannot change the AP (the official code would raise).
        precisions = [intersections[a] / pred_lengths[a] if pred_lengths[a] > 0 else 0.0 for a in range(2)]
        new_recall = math.sqrt(recalls[0] * recalls[1])
        precision = math.sqrt(precisions[0] * precisions[1])
        delta_recall = new_recall - recall
        ap += precision * delta_recall
        recall = new_recall
        if delta_recall > 0:
            curve_precisions.append(precision)
            curve_recalls.append(recall)
            curve_scores.append(score)
    return ap, np.array(curve_precisions), np.array(curve_recalls), np.array(curve_scores)


def evaluate_matching_track(predictions: Iterable[Match], ground_truth: Iterable[Match]) -> MatchingTrackResult:
    """Score matching-track predictions against ground truth.

    Args:
        predictions: predicted matches.
        ground_truth: ground-truth matches.

    Returns:
        MatchingTrackResult with the segment AP, its PR curve and the pairwise uAP.
    """
    from runtime.evaluation.descriptor_track import micro_average_precision
    from runtime.records import CandidatePair

    predictions = list(predictions)
    ground_truth = list(ground_truth)
    ap, precisions, recalls, scores = match_average_precision(predictions, ground_truth)
    # The official pair scores start from 0.0 (a defaultdict(float)), so negative scores clip to 0.
    best: dict[tuple[str, str], float] = {}
    for m in predictions:
        best[m.pair_id] = max(m.score, best.get(m.pair_id, 0.0))
    pairwise = micro_average_precision(
        [m.pair_id for m in ground_truth], [CandidatePair(q, r, s) for (q, r), s in best.items()]
    )
    logger.info("matching track segment AP %.4f, pairwise uAP %.4f", ap, pairwise.ap)
    return MatchingTrackResult(
        ap=ap,
        precisions=precisions,
        recalls=recalls,
        scores=scores,
        pairwise_uap=pairwise.ap,
        num_predictions=len(predictions),
    )


