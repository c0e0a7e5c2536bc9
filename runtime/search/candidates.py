"""Candidate (query, reference) video pairs from frame-pair searches (descriptor-track rules)."""

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
