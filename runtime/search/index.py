"""Similarity search over frame descriptors, with the challenge's search rules.

The descriptor track scores a submission by a *global* search: the K frame pairs with the
highest inner product over all query frames together (not K per query), then one score per
(query video, reference video) pair, the maximum over its frame pairs. This module
reproduces that (``vsc2022/vsc/index.py`` + ``vsc/candidates.py``) on top of faiss:

* :func:`global_top_k_frame_pairs` runs faiss' ``range_search_max_results`` over query
  batches of growing size (``exponential_query_iterator``), starting from a threshold that
  admits everything and raising it whenever more than 2K results pile up, so at most ~2K
  results are ever held; the survivors are sorted and cut to K.
* :func:`candidate_pairs` aggregates frame pairs into video pairs by max score.
* :func:`knn_frame_pairs` is a plain per-query-frame kNN (what a matching-track
  localisation stage wants; it is *not* allowed for descriptor-track scoring because a
  pair's score then depends on the other references).

Note [Tie order]: results are ordered by score descending and, among equal scores, in
query-major order (query row, then faiss' order within a query). Candidate pairs with equal
scores keep the order of their best frame pair. This is the order the official Python
``sorted(..., reverse=True)`` calls produce, so cuts at K (and at 25 x queries) keep the
same pairs as the official evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.records import FramePair

if TYPE_CHECKING:  # faiss is imported lazily: importing runtime must stay cheap
    import faiss

logger = logging.getLogger(__name__)

# Range-search threshold that admits every inner product (vsc/index.py uses the same).
_ADMIT_ALL_RADIUS = -1e10


@dataclass(frozen=True)
class FramePairs:
    """Frame-pair search results in columns (K can be millions; one object per row is not).

    Rows are sorted by score descending (see Note [Tie order]).

    Attributes:
        query_ids: id of each query video, indexed by ``query_video``.
        ref_ids: id of each reference video, indexed by ``ref_video``.
        query_video: (n,) int64 index into ``query_ids``.
        ref_video: (n,) int64 index into ``ref_ids``.
        query_timestamps: (n, 2) float32 [start, end) of the query frame.
        ref_timestamps: (n, 2) float32 [start, end) of the reference frame.
        scores: (n,) float32 inner products.
    """

    query_ids: tuple[str, ...]
    ref_ids: tuple[str, ...]
    query_video: np.ndarray
    ref_video: np.ndarray
    query_timestamps: np.ndarray
    ref_timestamps: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __iter__(self) -> Iterator[FramePair]:
        for qv, rv, qt, rt, s in zip(
            self.query_video.tolist(),
            self.ref_video.tolist(),
            self.query_timestamps.tolist(),
            self.ref_timestamps.tolist(),
            self.scores.tolist(),
        ):
            yield FramePair(self.query_ids[qv], self.ref_ids[rv], (qt[0], qt[1]), (rt[0], rt[1]), s)

    @classmethod
    def empty(cls, query_ids: Sequence[str] = (), ref_ids: Sequence[str] = ()) -> FramePairs:
        """Results with no rows."""
        return cls(
            tuple(query_ids),
            tuple(ref_ids),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros((0, 2), dtype=np.float32),
            np.zeros((0, 2), dtype=np.float32),
            np.zeros(0, dtype=np.float32),
        )


@dataclass(frozen=True)
class _StackedVideos:
    """All rows of a video set stacked, with the owning video of each row."""

    video_ids: tuple[str, ...]
    row_video: np.ndarray  # (N,) int64 index into video_ids
    timestamps: np.ndarray  # (N, 2) float32
    features: np.ndarray  # (N, D) float32, C-contiguous

    @classmethod
    def stack(cls, videos: Sequence[VideoDescriptors], role: str) -> _StackedVideos:
        videos = [v for v in videos if len(v) > 0]
        if not videos:
            return cls((), np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros((0, 0), np.float32))
        dims = sorted({v.dim for v in videos})
        if len(dims) != 1:
            raise ValueError(f"all {role} videos must share one descriptor dim, got dims {dims}")
        row_video = np.repeat(np.arange(len(videos), dtype=np.int64), [len(v) for v in videos])
        timestamps = np.concatenate([v.timestamps for v in videos]).astype(np.float32, copy=False)
        features = np.ascontiguousarray(np.concatenate([v.features for v in videos]), dtype=np.float32)
        return cls(tuple(v.video_id for v in videos), row_video, timestamps, features)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.row_video.shape[0])


def _sorted_frame_pairs(
    queries: _StackedVideos, refs: _StackedVideos, query_rows: np.ndarray, ref_rows: np.ndarray, scores: np.ndarray
) -> FramePairs:
    """Build FramePairs from row hits given in query-major order, sorting by score (stable)."""
    order = np.argsort(-scores, kind="stable")
    query_rows, ref_rows, scores = query_rows[order], ref_rows[order], scores[order]
    return FramePairs(
        query_ids=queries.video_ids,
        ref_ids=refs.video_ids,
        query_video=queries.row_video[query_rows],
        ref_video=refs.row_video[ref_rows],
        query_timestamps=queries.timestamps[query_rows],
        ref_timestamps=refs.timestamps[ref_rows],
        scores=scores.astype(np.float32, copy=False),
    )


class ReferenceIndex:
    """An inner-product index over all reference frame descriptors.

    Args:
        refs: reference videos (videos with zero rows are ignored).
        index: optional prebuilt faiss index holding exactly the reference rows, in the
            order of ``refs``, with ``METRIC_INNER_PRODUCT``; by default an exact
            ``IndexFlatIP`` is built.
        ngpu: GPUs the global range search may use (faiss clones the index to them and
            falls back to the CPU index for range queries the GPU kNN cannot answer);
            ``-1`` uses all visible GPUs, ``0`` (default) stays on the CPU.
    """

    def __init__(self, refs: Sequence[VideoDescriptors], index: faiss.Index | None = None, ngpu: int = 0) -> None:
        import faiss

        self._refs = _StackedVideos.stack(refs, "reference")
        self.ngpu = ngpu
        if index is None:
            index = faiss.IndexFlatIP(max(self._refs.dim, 1))
            if len(self._refs):
                index.add(self._refs.features)
        else:
            if index.metric_type != faiss.METRIC_INNER_PRODUCT:
                raise ValueError(
                    f"index must use METRIC_INNER_PRODUCT ({faiss.METRIC_INNER_PRODUCT}), "
                    f"got metric {index.metric_type}"
                )
            if index.ntotal != len(self._refs) or (len(self._refs) and index.d != self._refs.dim):
                raise ValueError(
                    f"prebuilt index holds {index.ntotal} vectors of dim {index.d}; "
                    f"references have {len(self._refs)} rows of dim {self._refs.dim}"
                )
        self.index = index

    @property
    def ref_ids(self) -> tuple[str, ...]:
        return self._refs.video_ids

    @property
    def ntotal(self) -> int:
        return len(self._refs)

    def _stack_queries(self, queries: Sequence[VideoDescriptors]) -> _StackedVideos:
        stacked = _StackedVideos.stack(queries, "query")
        if len(stacked) and len(self._refs) and stacked.dim != self._refs.dim:
            raise ValueError(f"query descriptor dim {stacked.dim} does not match reference dim {self._refs.dim}")
        return stacked

    def global_top_k(self, queries: Sequence[VideoDescriptors], k: int) -> FramePairs:
        """The K frame pairs with the highest inner product over all queries together.

        Args:
            queries: query videos.
            k: number of frame pairs to return (fewer if fewer pairs exist).

        Returns:
            FramePairs sorted by score descending, ``len <= k``. As in the official
            search, an exact tie straddling a threshold faiss picks while shrinking its
            result set may drop some tied pairs, so fewer than K can come back.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        from faiss.contrib.exhaustive_search import (
            exponential_query_iterator,
            range_search_max_results,
        )

        queries_stacked = self._stack_queries(queries)
        if k == 0 or not len(queries_stacked) or not len(self._refs):
            return FramePairs.empty(queries_stacked.video_ids, self.ref_ids)
        _, lims, scores, ref_rows = range_search_max_results(
            self.index,
            exponential_query_iterator(queries_stacked.features),
            _ADMIT_ALL_RADIUS,
            max_results=2 * k,
            min_results=k,
            ngpu=self.ngpu,
        )
        query_rows = np.repeat(np.arange(len(queries_stacked), dtype=np.int64), np.diff(lims.astype(np.int64)))
        pairs = _sorted_frame_pairs(queries_stacked, self._refs, query_rows, ref_rows.astype(np.int64), scores)
        if len(pairs) > k:
            pairs = _take(pairs, slice(0, k))
        logger.debug(
            "global search: %d query rows x %d ref rows, kept %d frame pairs",
            len(queries_stacked),
            self.ntotal,
            len(pairs),
        )
        return pairs

    def knn(self, queries: Sequence[VideoDescriptors], k: int) -> FramePairs:
        """The k nearest reference frames of every query frame.

        Args:
            queries: query videos.
            k: neighbours per query frame (clipped to the number of reference rows).

        Returns:
            FramePairs sorted by score descending, ``len == query rows * min(k, ref rows)``.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        queries_stacked = self._stack_queries(queries)
        k = min(k, self.ntotal)
        if k == 0 or not len(queries_stacked):
            return FramePairs.empty(queries_stacked.video_ids, self.ref_ids)
        scores, ref_rows = self.index.search(queries_stacked.features, k)
        query_rows = np.repeat(np.arange(len(queries_stacked), dtype=np.int64), k)
        return _sorted_frame_pairs(queries_stacked, self._refs, query_rows, ref_rows.reshape(-1), scores.reshape(-1))


def _take(pairs: FramePairs, rows: Any) -> FramePairs:
    return FramePairs(
        pairs.query_ids,
        pairs.ref_ids,
        pairs.query_video[rows],
        pairs.ref_video[rows],
        pairs.query_timestamps[rows],
        pairs.ref_timestamps[rows],
        pairs.scores[rows],
    )


