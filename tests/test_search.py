"""Global top-K / kNN frame search and max-score aggregation, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runtime.io.descriptors import VideoDescriptors
from runtime.records import CandidatePair, FramePair
from runtime.search.candidates import (
    candidate_pairs,
    global_top_k_frame_pairs,
    knn_frame_pairs,
)
from runtime.search.index import ReferenceIndex


def video(video_id: str, features, start: float = 0.0) -> VideoDescriptors:
    features = np.asarray(features, dtype=np.float32)
    starts = start + np.arange(len(features), dtype=np.float32)
    return VideoDescriptors(video_id, np.stack([starts, starts + 1], axis=1), features)


def random_videos(rng: np.random.Generator, prefix: str, rows_per_video, dim: int) -> list[VideoDescriptors]:
    return [video(f"{prefix}{i}", rng.standard_normal((n, dim))) for i, n in enumerate(rows_per_video)]


def brute_force_rows(queries, refs):
    """All (score, query row key, ref row key) in query-major order, from a dense matrix."""
    q = np.concatenate([v.features for v in queries]).astype(np.float64)
    r = np.concatenate([v.features for v in refs]).astype(np.float64)
    q_keys = [(v.video_id, float(t[0])) for v in queries for t in v.timestamps]
    r_keys = [(v.video_id, float(t[0])) for v in refs for t in v.timestamps]
    sim = q @ r.T
    return [(sim[i, j], q_keys[i], r_keys[j]) for i in range(len(q_keys)) for j in range(len(r_keys))]


def keys(frame_pairs):
    return [(p.query_id, p.query_timestamps[0], p.ref_id, p.ref_timestamps[0]) for p in frame_pairs]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    query_rows=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    ref_rows=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    k=st.integers(1, 80),
)
def test_global_top_k_matches_dense_brute_force(seed, query_rows, ref_rows, k):
    rng = np.random.default_rng(seed)
    queries = random_videos(rng, "Q", query_rows, 6)
    refs = random_videos(rng, "R", ref_rows, 6)
    expected = sorted(brute_force_rows(queries, refs), key=lambda x: x[0], reverse=True)
    if len(expected) > k:
        # float32 (faiss) vs float64 (here) could swap two near-equal scores at the cut.
        assume(expected[k - 1][0] - expected[k][0] > 1e-4)
    expected = expected[:k]

    result = global_top_k_frame_pairs(queries, refs, k)

    assert len(result) == len(expected)
    assert sorted(keys(result)) == sorted((q[0], q[1], r[0], r[1]) for _, q, r in expected)
    np.testing.assert_allclose(result.scores, [s for s, _, _ in expected], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(result.scores) <= 0)


def test_global_top_k_with_radius_shrinking_matches_brute_force():
    # > 32 query rows and > 2K results: faiss must raise its threshold between batches.
    rng = np.random.default_rng(0)
    queries = random_videos(rng, "Q", [70, 90, 40], 16)
    refs = random_videos(rng, "R", [100, 150, 50], 16)
    k = 500
    expected = sorted(brute_force_rows(queries, refs), key=lambda x: x[0], reverse=True)
    assert expected[k - 1][0] - expected[k][0] > 1e-4
    result = global_top_k_frame_pairs(queries, refs, k)
    assert len(result) == k
    assert sorted(keys(result)) == sorted((q[0], q[1], r[0], r[1]) for _, q, r in expected[:k])


def test_global_top_k_is_global_not_per_query():
    # Q0 matches everything strongly, Q1 weakly: a global K=2 keeps only Q0 rows.
    refs = [video("R0", [[1, 0]]), video("R1", [[0.9, 0.1]])]
    queries = [video("Q0", [[5, 0]]), video("Q1", [[1, 0]])]
    result = global_top_k_frame_pairs(queries, refs, 2)
    assert [p.query_id for p in result] == ["Q0", "Q0"]
    assert [p.ref_id for p in result] == ["R0", "R1"]
    np.testing.assert_allclose(result.scores, [5.0, 4.5], rtol=1e-6)


def test_frame_pairs_iterate_as_typed_rows():
    refs = [video("R7", [[0, 1], [1, 0]], start=10.0)]
    queries = [video("Q3", [[2, 0]], start=4.0)]
    (best, second) = list(global_top_k_frame_pairs(queries, refs, 5))
    assert best == FramePair("Q3", "R7", (4.0, 5.0), (11.0, 12.0), 2.0)
    assert second.score == 0.0 and second.ref_timestamps == (10.0, 11.0)


def test_candidate_pairs_take_max_and_sort_by_score():
    refs = [video("R0", [[1, 0], [0.5, 0]]), video("R1", [[0, 1]])]
    queries = [video("Q0", [[1, 0], [0, 3]]), video("Q1", [[2, 2]])]
    # Q0-R0: max(1, 0.5, 0, 0) = 1; Q0-R1: max(0, 3) = 3; Q1-R0: max(2, 1) = 2; Q1-R1: 2.
    candidates = candidate_pairs(global_top_k_frame_pairs(queries, refs, 100))
    assert candidates == [
        CandidatePair("Q0", "R1", 3.0),
        CandidatePair("Q1", "R0", 2.0),  # tie with Q1-R1: R0's best frame pair comes first
        CandidatePair("Q1", "R1", 2.0),
        CandidatePair("Q0", "R0", 1.0),
    ]


def test_candidate_pairs_tie_order_follows_best_frame_pair():
    # Equal candidate scores: the pair whose best frame pair comes first (query-major) wins.
    refs = [video("R0", [[1.0]]), video("R1", [[1.0]])]
    queries = [video("Q0", [[0.5], [2.0]]), video("Q1", [[2.0]])]
    candidates = candidate_pairs(global_top_k_frame_pairs(queries, refs, 100))
    assert [(c.query_id, c.ref_id) for c in candidates] == [("Q0", "R0"), ("Q0", "R1"), ("Q1", "R0"), ("Q1", "R1")]
    assert [c.score for c in candidates] == [2.0, 2.0, 2.0, 2.0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    query_rows=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    ref_rows=st.lists(st.integers(1, 6), min_size=1, max_size=3),
)
def test_candidate_pairs_match_brute_force_max(seed, query_rows, ref_rows):
    rng = np.random.default_rng(seed)
    queries = random_videos(rng, "Q", query_rows, 4)
    refs = random_videos(rng, "R", ref_rows, 4)
    best: dict[tuple[str, str], float] = {}
    for score, (qid, _), (rid, _) in brute_force_rows(queries, refs):
        best[qid, rid] = max(score, best.get((qid, rid), -np.inf))
    candidates = candidate_pairs(global_top_k_frame_pairs(queries, refs, 10_000))
    assert {(c.query_id, c.ref_id) for c in candidates} == set(best)
    for c in candidates:
        assert c.score == pytest.approx(best[c.query_id, c.ref_id], abs=1e-5)
    assert all(a.score >= b.score for a, b in zip(candidates, candidates[1:]))


def test_knn_returns_k_best_per_query_frame():
    rng = np.random.default_rng(1)
    queries = random_videos(rng, "Q", [3, 2], 8)
    refs = random_videos(rng, "R", [4, 5], 8)
    result = knn_frame_pairs(queries, refs, 3)
    assert len(result) == 5 * 3
    rows = brute_force_rows(queries, refs)
    for q_key in {q for _, q, _ in rows}:
        expected = sorted((r for r in rows if r[1] == q_key), key=lambda x: x[0], reverse=True)[:3]
        got = [p for p in result if (p.query_id, p.query_timestamps[0]) == q_key]
        assert sorted((p.ref_id, p.ref_timestamps[0]) for p in got) == sorted(r for _, _, r in expected)


def test_knn_clips_k_to_reference_rows():
    result = knn_frame_pairs([video("Q0", [[1, 0]])], [video("R0", [[1, 0], [0, 1]])], 10)
    assert len(result) == 2
    assert list(result.scores) == [1.0, 0.0]


def test_empty_inputs_give_empty_results():
    q = [video("Q0", [[1, 0]])]
    r = [video("R0", [[1, 0]])]
    empty_video = VideoDescriptors("Q9", np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    assert len(global_top_k_frame_pairs([], r, 10)) == 0
    assert len(global_top_k_frame_pairs(q, [], 10)) == 0
    assert len(global_top_k_frame_pairs(q, r, 0)) == 0
    assert len(global_top_k_frame_pairs([empty_video], r, 10)) == 0
    assert len(knn_frame_pairs([], r, 3)) == 0
    assert len(knn_frame_pairs(q, [], 3)) == 0
    assert candidate_pairs(global_top_k_frame_pairs([], r, 10)) == []


def test_invalid_arguments_raise_value_error():
    q = [video("Q0", [[1, 0]])]
    r = [video("R0", [[1, 0]])]
    with pytest.raises(ValueError, match="k must be >= 0, got -1"):
        global_top_k_frame_pairs(q, r, -1)
    with pytest.raises(ValueError, match="query descriptor dim 3 does not match reference dim 2"):
        global_top_k_frame_pairs([video("Q0", [[1, 0, 0]])], r, 1)
    with pytest.raises(ValueError, match=r"dims \[2, 3\]"):
        ReferenceIndex([video("R0", [[1, 0]]), video("R1", [[1, 0, 0]])])


def test_prebuilt_index_is_used_and_checked():
    import faiss

    rng = np.random.default_rng(2)
    refs = random_videos(rng, "R", [5, 3], 4)
    queries = random_videos(rng, "Q", [4], 4)
    prebuilt = faiss.IndexFlatIP(4)
    prebuilt.add(np.concatenate([v.features for v in refs]))
    own = ReferenceIndex(refs).global_top_k(queries, 7)
    given_index = ReferenceIndex(refs, index=prebuilt).global_top_k(queries, 7)
    assert keys(own) == keys(given_index)
    with pytest.raises(ValueError, match="holds 8 vectors of dim 4; references have 5 rows"):
        ReferenceIndex(refs[:1], index=prebuilt)
    with pytest.raises(ValueError, match="METRIC_INNER_PRODUCT"):
        ReferenceIndex(refs, index=faiss.IndexFlatL2(4))
