"""Descriptor-track metric: video-pair micro AP (uAP) after the official global search.

Semantics follow ``vsc2022/vsc/descriptor_eval_lib.py`` and ``vsc/metrics.py``:

1. Retrieve the global top ``K = 1200 x (number of query videos)`` frame pairs by inner
   product (:func:`runtime.search.global_top_k_frame_pairs`).
2. Score each (query, reference) video pair by its best frame pair, sort by score, keep the
   top ``25 x (number of query videos)``.
3. ``uAP = average_precision_score(labels, scores) x (GT pairs retrieved / all GT pairs)``,
   sklearn's AP over the kept candidates rescaled by the recall they reach (DrivenData's
   canonical scorer).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.records import CandidatePair
from runtime.search.candidates import candidate_pairs
from runtime.search.index import ReferenceIndex

logger = logging.getLogger(__name__)

RETRIEVAL_CANDIDATES_PER_QUERY = 20 * 60  # like kNN with k=20 for ~60 s videos (official)
AGGREGATED_CANDIDATES_PER_QUERY = 25


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Precision and recall at each correct candidate, in score order."""

    precisions: np.ndarray
    recalls: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class AveragePrecision:
    """Micro AP over video pairs.

    Attributes:
        ap: the canonical (DrivenData) uAP.
        recall: ground-truth pairs among the candidates / all ground-truth pairs.
        simple_ap: sum of precision at each correct candidate / all ground-truth pairs
            (equals ``ap`` when scores have no ties).
        pr_curve: precision/recall at each correct candidate.
    """

    ap: float
    recall: float
    simple_ap: float
    pr_curve: PrecisionRecallCurve


@dataclass(frozen=True)
class DescriptorTrackResult:
    """Descriptor-track evaluation.

    Attributes:
        uap: the track's metric.
        recall: ground-truth pairs retrieved among the kept candidates / all GT pairs.
        simple_ap: see :class:`AveragePrecision`.
        num_candidates: candidates kept (<= 25 x query videos).
        num_ground_truth_pairs: unique ground-truth pairs.
        candidates: the kept candidates, best first.
        pr_curve: precision/recall at each correct candidate.
    """

    uap: float
    recall: float
    simple_ap: float
    num_candidates: int
    num_ground_truth_pairs: int
    candidates: list[CandidatePair]
    pr_curve: PrecisionRecallCurve


def micro_average_precision(
    ground_truth: Iterable[tuple[str, str]], candidates: Sequence[CandidatePair]
) -> AveragePrecision:
    """Video-pair micro AP as the challenge computes it.

    Args:
        ground_truth: (query_id, ref_id) pairs; duplicates are merged.
        candidates: scored pairs, each pair at most once.

    Returns:
        AveragePrecision.

    Raises:
        ValueError: on an empty ground truth, duplicate candidate pairs or non-finite scores.
    """
    gt_pairs = set(ground_truth)
    if not gt_pairs:
        raise ValueError("ground truth has no (query_id, ref_id) pairs; uAP needs at least one")
    keys = [(c.query_id, c.ref_id) for c in candidates]
    if len(set(keys)) != len(keys):
        duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)[:3]
        raise ValueError(f"candidates contain duplicate (query_id, ref_id) pairs, e.g. {duplicates}")
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"candidate scores must be finite, got {scores[~np.isfinite(scores)][:3].tolist()}")
    labels = np.array([k in gt_pairs for k in keys], dtype=bool)
    num_correct = int(labels.sum())
    recall = num_correct / len(gt_pairs)
    if num_correct:
        from sklearn.metrics import average_precision_score

        ap = float(average_precision_score(labels, scores)) * recall
    else:
        ap = 0.0
    order = np.argsort(-scores, kind="stable")
    sorted_labels = labels[order]
    cumulative_correct = np.cumsum(sorted_labels)
    precision = cumulative_correct / np.arange(1, len(order) + 1)
    simple_ap = float(np.sum(precision[sorted_labels]) / len(gt_pairs))
    correct = np.flatnonzero(sorted_labels)
    curve = PrecisionRecallCurve(
        precisions=precision[correct],
        recalls=cumulative_correct[correct] / len(gt_pairs),
        scores=scores[order][correct],
    )
    return AveragePrecision(ap=ap, recall=recall, simple_ap=simple_ap, pr_curve=curve)


def descriptor_track_candidates(
    queries: Sequence[VideoDescriptors],
    refs: Sequence[VideoDescriptors],
    *,
    index: Any = None,
    ngpu: int = 0,
) -> list[CandidatePair]:
    """The candidates the official descriptor evaluation scores.

    Args:
        queries: query videos (videos with zero rows do not count).
        refs: reference videos.
        index: optional prebuilt faiss index over ``refs`` (see :class:`ReferenceIndex`).
        ngpu: GPUs for the search (see :class:`ReferenceIndex`).

    Returns:
        At most ``25 x query videos`` candidates, best first.
    """
    num_queries = sum(1 for q in queries if len(q))
    global_k = RETRIEVAL_CANDIDATES_PER_QUERY * num_queries
    frame_pairs = ReferenceIndex(refs, index=index, ngpu=ngpu).global_top_k(queries, global_k)
    candidates = candidate_pairs(frame_pairs)
    logger.info("descriptor search: %d frame pairs -> %d video pairs", len(frame_pairs), len(candidates))
    return candidates[: AGGREGATED_CANDIDATES_PER_QUERY * num_queries]


def evaluate_descriptor_track(
    queries: Sequence[VideoDescriptors],
    refs: Sequence[VideoDescriptors],
    ground_truth: Any,
    *,
    index: Any = None,
    ngpu: int = 0,
) -> DescriptorTrackResult:
    """Evaluate descriptors the way the descriptor track does.

    Args:
        queries: query videos.
        refs: reference videos.
        ground_truth: anything :func:`runtime.io.ground_truth.ground_truth_pairs`
            accepts (DataFrame with query_id/ref_id, Match objects or id tuples).
        index: optional prebuilt faiss index over ``refs``.
        ngpu: GPUs for the search.

    Returns:
        DescriptorTrackResult.
    """
    from runtime.io.ground_truth import ground_truth_pairs

    gt_pairs = ground_truth_pairs(ground_truth)
    candidates = descriptor_track_candidates(queries, refs, index=index, ngpu=ngpu)
    metric = micro_average_precision(gt_pairs, candidates)
    logger.info("descriptor track uAP %.4f (recall %.4f over %d candidates)", metric.ap, metric.recall, len(candidates))
    return DescriptorTrackResult(
        uap=metric.ap,
        recall=metric.recall,
        simple_ap=metric.simple_ap,
        num_candidates=len(candidates),
        num_ground_truth_pairs=len(gt_pairs),
        candidates=candidates,
        pr_curve=metric.pr_curve,
    )


def evaluate_descriptor_files(
    query_npz: str | os.PathLike,
    ref_npz: str | os.PathLike,
    gt_csv: str | os.PathLike,
    *,
    ngpu: int = 0,
) -> DescriptorTrackResult:
    """File-level descriptor-track evaluation (the official ``descriptor_eval.py``).

    Args:
        query_npz: query descriptors in the challenge ``.npz`` format.
        ref_npz: reference descriptors.
        gt_csv: ground-truth CSV with ``query_id`` and ``ref_id`` columns.
        ngpu: GPUs for the search.

    Returns:
        DescriptorTrackResult.
    """
    from runtime.io.descriptors import load_descriptors
    from runtime.io.ground_truth import (
        format_video_id,
        read_descriptor_ground_truth,
    )

    def load(path: str | os.PathLike, prefix: Literal["Q", "R"]) -> list[VideoDescriptors]:
        videos = load_descriptors(path)
        return [VideoDescriptors(format_video_id(v.video_id, prefix), v.timestamps, v.features) for v in videos]

    queries, refs = load(query_npz, "Q"), load(ref_npz, "R")
    logger.info("loaded %d query and %d reference videos", len(queries), len(refs))
    return evaluate_descriptor_track(queries, refs, read_descriptor_ground_truth(gt_csv), ngpu=ngpu)


__all__ = [
    "AGGREGATED_CANDIDATES_PER_QUERY",
    "RETRIEVAL_CANDIDATES_PER_QUERY",
    "AveragePrecision",
    "DescriptorTrackResult",
    "PrecisionRecallCurve",
    "descriptor_track_candidates",
    "evaluate_descriptor_files",
    "evaluate_descriptor_track",
    "micro_average_precision",
]
