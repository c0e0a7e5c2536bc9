"""Candidate (query, reference) video pairs from frame-pair searches: the descriptor track's global
search and the matching track's per-query search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.records import CandidatePair
from runtime.search.index import FramePairs, ReferenceIndex

if TYPE_CHECKING:  # faiss is imported lazily: importing runtime must stay cheap
    import faiss


def global_top_k_frame_pairs(
    queries: Sequence[VideoDescriptors],
    refs: Sequence[VideoDescriptors],
    k: int,
    *,
    ngpu: int = 0,
) -> FramePairs:
    """The global top-K frame pairs by inner product (the descriptor track's search).

    Args:
        queries: query videos.
        refs: reference videos.
        k: number of frame pairs over all queries together.
        ngpu: see :class:`ReferenceIndex`.

    Returns:
        FramePairs sorted by score descending.
    """
    return ReferenceIndex(refs, ngpu=ngpu).global_top_k(queries, k)


def knn_frame_pairs(
    queries: Sequence[VideoDescriptors],
    refs: Sequence[VideoDescriptors],
    k: int,
    *,
    index: faiss.Index | None = None,
) -> FramePairs:
    """Per-query-frame kNN frame pairs (for matching-track localisation, not for uAP).

    Args:
        queries: query videos.
        refs: reference videos.
        k: neighbours per query frame.
        index: optional prebuilt index over ``refs`` (see :class:`ReferenceIndex`).

    Returns:
        FramePairs sorted by score descending.
    """
    return ReferenceIndex(refs, index=index).knn(queries, k)


def candidate_pairs(frame_pairs: FramePairs) -> list[CandidatePair]:
    """One candidate per (query, reference) video pair, scored by its best frame pair.

    Args:
        frame_pairs: search results (any order).

    Returns:
        Candidates sorted by score descending; ties keep the order of their best frame
        pair (Note [Tie order]).
    """
    if not len(frame_pairs):
        return []
    order = np.argsort(-frame_pairs.scores, kind="stable")
    pair_key = frame_pairs.query_video[order] * len(frame_pairs.ref_ids) + frame_pairs.ref_video[order]
    # The first row of each pair in score order is its maximum.
    _, first_rows = np.unique(pair_key, return_index=True)
    best = order[np.sort(first_rows)]
    query_video, ref_video = frame_pairs.query_video[best].tolist(), frame_pairs.ref_video[best].tolist()
    return [
        CandidatePair(frame_pairs.query_ids[qv], frame_pairs.ref_ids[rv], score)
        for qv, rv, score in zip(query_video, ref_video, frame_pairs.scores[best].tolist())
    ]


def per_query_candidates(
    queries: Sequence[VideoDescriptors],
    index: ReferenceIndex,
    neighbors_per_descriptor: int,
    max_refs_per_query: int,
) -> list[CandidatePair]:
    """Candidate pairs chosen for each query on its own (matching track, production search).

    For every query video separately: the ``neighbors_per_descriptor`` nearest reference
    descriptors of each of its descriptors, one score per reference (the best frame pair),
    and the ``max_refs_per_query`` best references. Unlike the global search of the
    descriptor track (:func:`global_top_k_frame_pairs`, the official metric's procedure),
    a query's candidates depend on that query and the reference set alone, not on which
    other queries are searched with it. Each query is searched in its own faiss call, so
    even the floating-point path (faiss switches to BLAS for larger batches) is the same
    whatever the other queries are.

    Args:
        queries: query videos (videos with zero rows get no candidates).
        index: the reference index.
        neighbors_per_descriptor: k of the per-descriptor kNN (clipped to the reference rows).
        max_refs_per_query: per-query cap on candidate references.

    Returns:
        Candidates sorted by score descending; equal scores keep query order, then each
        query's own order.
    """
    if neighbors_per_descriptor < 1 or max_refs_per_query < 1:
        raise ValueError(
            f"neighbors_per_descriptor and max_refs_per_query must be >= 1, got "
            f"{neighbors_per_descriptor} and {max_refs_per_query}"
        )
    out: list[CandidatePair] = []
    for query in queries:
        if len(query) == 0:
            continue
        out.extend(candidate_pairs(index.knn([query], neighbors_per_descriptor))[:max_refs_per_query])
    return sorted(out, key=lambda c: -c.score)
