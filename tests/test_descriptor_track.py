"""Descriptor-track uAP: hand-computed cases and a brute-force cross-check."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runtime.evaluation import descriptor_track
from runtime.evaluation.descriptor_track import (
    evaluate_descriptor_files,
    evaluate_descriptor_track,
    micro_average_precision,
)
from runtime.io.descriptors import VideoDescriptors, save_descriptors
from runtime.io.ground_truth import (
    ground_truth_pairs,
    read_candidates_csv,
    read_descriptor_ground_truth,
    write_candidates_csv,
)
from runtime.records import CandidatePair as C
from runtime.records import Match


def video(video_id: str, features) -> VideoDescriptors:
    features = np.asarray(features, dtype=np.float32)
    starts = np.arange(len(features), dtype=np.float32)
    return VideoDescriptors(video_id, np.stack([starts, starts + 1], axis=1), features)


def one_hot(i: int, dim: int = 8, scale: float = 1.0) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i] = scale
    return v


GT = [("Q1", "R10"), ("Q2", "R11")]


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        # Both correct pairs ranked first.
        ([C("Q1", "R10", 8.0), C("Q2", "R11", 4.0), C("Q99", "R99", 2.0)], 1.0),
        # A wrong pair between them: precision 1 then 2/3.
        ([C("Q1", "R10", 8.0), C("Q2", "R11", 4.0), C("Q99", "R99", 5.0)], (1 + 2 / 3) / 2),
        # Only one of two GT pairs retrieved: sklearn AP 1.0 x recall coverage 1/2.
        ([C("Q1", "R10", 3.0), C("Q2", "R10", 2.0), C("Q99", "R99", 1.0)], 0.5),
        # Retrieved at rank 2: (1/2) x 1/2.
        ([C("Q1", "R10", 2.0), C("Q2", "R10", 3.0), C("Q99", "R99", 1.0)], 0.25),
    ],
)
def test_micro_ap_hand_computed(candidates, expected):
    result = micro_average_precision(GT, candidates)
    assert result.ap == pytest.approx(expected)
    assert result.simple_ap == pytest.approx(expected)  # no ties: both definitions agree


def test_micro_ap_processes_tied_scores_together():
    # One correct and one wrong pair with the same score: precision 1/2 at the only
    # threshold, whichever of the two is listed first.
    for candidates in ([C("Q1", "R10", 1.0), C("Q5", "R5", 1.0)], [C("Q5", "R5", 1.0), C("Q1", "R10", 1.0)]):
        assert micro_average_precision([("Q1", "R10")], candidates).ap == pytest.approx(0.5)


def test_micro_ap_recall_and_curve():
    result = micro_average_precision(GT, [C("Q2", "R10", 3.0), C("Q1", "R10", 2.0), C("Q7", "R1", 1.0)])
    assert result.recall == 0.5
    np.testing.assert_allclose(result.pr_curve.precisions, [0.5])
    np.testing.assert_allclose(result.pr_curve.recalls, [0.5])
    np.testing.assert_allclose(result.pr_curve.scores, [2.0])


def test_micro_ap_edge_cases():
    assert micro_average_precision(GT, []).ap == 0.0
    assert micro_average_precision(GT, [C("Q5", "R5", 1.0)]).ap == 0.0
    # Duplicate GT pairs are one pair.
    assert micro_average_precision(GT + GT, [C("Q1", "R10", 1.0), C("Q2", "R11", 1.0)]).ap == 1.0
    with pytest.raises(ValueError, match="duplicate"):
        micro_average_precision(GT, [C("Q1", "R10", 1.0), C("Q1", "R10", 0.5)])
    with pytest.raises(ValueError, match="no .query_id, ref_id. pairs"):
        micro_average_precision([], [C("Q1", "R10", 1.0)])
    with pytest.raises(ValueError, match="finite"):
        micro_average_precision(GT, [C("Q1", "R10", float("nan"))])


def test_perfect_descriptors_score_one():
    queries = [video(f"Q{i}", [one_hot(i), one_hot(i)]) for i in range(4)]
    refs = [video(f"R{i}", [one_hot(i)]) for i in range(4)]
    result = evaluate_descriptor_track(queries, refs, [(f"Q{i}", f"R{i}") for i in range(4)])
    assert result.uap == pytest.approx(1.0)
    assert result.recall == 1.0
    assert result.num_ground_truth_pairs == 4
    # Every (query, ref) frame pair fits in K, so all 16 video pairs are candidates (<= 25 x 4).
    assert result.num_candidates == 16
    assert [(c.query_id, c.ref_id) for c in result.candidates[:4]] == [(f"Q{i}", f"R{i}") for i in range(4)]


def test_query_with_two_references():
    queries = [video("Q1", [one_hot(0), one_hot(1)])]
    refs = [video("R1", [one_hot(0, scale=0.9)]), video("R2", [one_hot(1, scale=0.8)]), video("R3", [one_hot(2)])]
    gt = pd.DataFrame({"query_id": ["Q1", "Q1"], "ref_id": ["R1", "R2"]})
    result = evaluate_descriptor_track(queries, refs, gt)
    assert [c.ref_id for c in result.candidates] == ["R1", "R2", "R3"]
    assert result.uap == pytest.approx(1.0)


def test_non_gt_pair_ranked_first_lowers_uap():
    queries = [video("Q1", [one_hot(0) + one_hot(1)])]
    refs = [video("R1", [one_hot(0, scale=0.5)]), video("R2", [one_hot(1, scale=0.9)])]
    result = evaluate_descriptor_track(queries, refs, [("Q1", "R1")])
    assert [c.ref_id for c in result.candidates] == ["R2", "R1"]
    assert result.uap == pytest.approx(0.5)


@pytest.mark.parametrize(("distractor_rows", "expected_uap"), [(1199, 0.5), (1200, 0.0)])
def test_global_top_k_cut_can_drop_a_true_pair(distractor_rows, expected_uap):
    # One query -> K = 1200 frame pairs. A distractor reference with many frames scoring
    # 0.9 fills K before the true pair (0.5) gets in, though they form one video pair.
    queries = [video("Q1", [one_hot(0)])]
    refs = [
        video("R_distractor", np.tile(one_hot(0, scale=0.9), (distractor_rows, 1))),
        video("R_true", [one_hot(0, scale=0.5)]),
    ]
    result = evaluate_descriptor_track(queries, refs, [("Q1", "R_true")])
    assert result.uap == pytest.approx(expected_uap)
    assert result.recall == (1.0 if expected_uap else 0.0)


@pytest.mark.parametrize(("num_distractors", "expected_uap"), [(24, 1 / 25), (25, 0.0)])
def test_candidate_cut_keeps_25_per_query(num_distractors, expected_uap):
    queries = [video("Q1", [one_hot(0, dim=64)])]
    refs = [video(f"R{i:02d}", [one_hot(0, dim=64, scale=2.0 - i / 100)]) for i in range(num_distractors)]
    refs.append(video("R_true", [one_hot(0, dim=64, scale=0.5)]))
    result = evaluate_descriptor_track(queries, refs, [("Q1", "R_true")])
    assert result.num_candidates == 25
    assert result.uap == pytest.approx(expected_uap)


def test_empty_ground_truth_is_rejected():
    with pytest.raises(ValueError, match="ground truth has no"):
        evaluate_descriptor_track([video("Q1", [one_hot(0)])], [video("R1", [one_hot(0)])], [])


def brute_force_uap(queries, refs, gt_pairs, retrieval_per_query, kept_per_query):
    """Dense similarity matrix -> global top-K -> max per video pair -> sklearn AP x coverage."""
    from sklearn.metrics import average_precision_score

    q = np.concatenate([v.features for v in queries]).astype(np.float64)
    r = np.concatenate([v.features for v in refs]).astype(np.float64)
    q_ids = [v.video_id for v in queries for _ in range(len(v))]
    r_ids = [v.video_id for v in refs for _ in range(len(v))]
    sim = q @ r.T
    flat = [(sim[i, j], q_ids[i], r_ids[j]) for i in range(len(q_ids)) for j in range(len(r_ids))]
    top = sorted(flat, key=lambda x: x[0], reverse=True)[: retrieval_per_query * len(queries)]
    best: dict[tuple[str, str], float] = {}
    for score, qid, rid in top:
        best.setdefault((qid, rid), score)  # first occurrence in score order is the max
    kept = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[: kept_per_query * len(queries)]
    labels = np.array([pair in set(gt_pairs) for pair, _ in kept])
    scores = np.array([s for _, s in kept])
    if not labels.any():
        return 0.0, [p for p, _ in kept], sorted(x[0] for x in flat)
    coverage = labels.sum() / len(set(gt_pairs))
    return average_precision_score(labels, scores) * coverage, [p for p, _ in kept], sorted(x[0] for x in flat)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    query_rows=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    ref_rows=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    retrieval_per_query=st.integers(1, 8),
    kept_per_query=st.integers(1, 4),
    gt_mask=st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_uap_matches_brute_force(seed, query_rows, ref_rows, retrieval_per_query, kept_per_query, gt_mask):
    rng = np.random.default_rng(seed)
    queries = [video(f"Q{i}", rng.standard_normal((n, 5))) for i, n in enumerate(query_rows)]
    refs = [video(f"R{i}", rng.standard_normal((n, 5))) for i, n in enumerate(ref_rows)]
    all_pairs = [(q.video_id, r.video_id) for q in queries for r in refs]
    gt = [p for p, keep in zip(all_pairs, gt_mask) if keep]
    assume(gt)
    expected_uap, expected_pairs, all_scores = brute_force_uap(queries, refs, gt, retrieval_per_query, kept_per_query)
    # float32 faiss vs float64 here could reorder near-equal scores.
    assume(np.min(np.diff(all_scores), initial=1.0) > 1e-4)

    with (
        mock.patch.object(descriptor_track, "RETRIEVAL_CANDIDATES_PER_QUERY", retrieval_per_query),
        mock.patch.object(descriptor_track, "AGGREGATED_CANDIDATES_PER_QUERY", kept_per_query),
    ):
        result = evaluate_descriptor_track(queries, refs, gt)

    assert [(c.query_id, c.ref_id) for c in result.candidates] == expected_pairs
    assert result.uap == pytest.approx(expected_uap, abs=1e-9)


def test_files_round_trip(tmp_path):
    queries = [video("Q200001", [one_hot(0), one_hot(1)]), video("Q200002", [one_hot(2)])]
    refs = [video("R100001", [one_hot(1)]), video("R100002", [one_hot(3)])]
    save_descriptors(tmp_path / "q.npz", queries)
    save_descriptors(tmp_path / "r.npz", refs)
    # Official matching GT format; the duplicated pair counts once.
    (tmp_path / "gt.csv").write_text(
        "query_id,ref_id,query_start,query_end,ref_start,ref_end\n"
        "Q200001,R100001,0,1,0,1\n"
        "Q200001,R100001,1,2,0,1\n"
        "Q200002,R100002,0,1,0,1\n"
    )
    assert read_descriptor_ground_truth(tmp_path / "gt.csv") == [("Q200001", "R100001"), ("Q200002", "R100002")]
    result = evaluate_descriptor_files(tmp_path / "q.npz", tmp_path / "r.npz", tmp_path / "gt.csv")
    assert result.num_ground_truth_pairs == 2
    # Q200001-R100001 scores 1; Q200002-R100002 scores 0 and ties with the other two
    # zero-score pairs: sklearn AP = (1 + 2/4) / 2.
    assert result.recall == 1.0
    assert result.uap == pytest.approx(0.75)

    write_candidates_csv(result.candidates, tmp_path / "candidates.csv")
    assert read_candidates_csv(tmp_path / "candidates.csv") == result.candidates


def test_ground_truth_inputs():
    matches = [Match("Q1", "R1", 0, 1, 0, 1), Match("Q1", "R1", 2, 3, 2, 3), Match("Q2", "R1", 0, 1, 0, 1)]
    assert ground_truth_pairs(matches) == [("Q1", "R1"), ("Q2", "R1")]
    df = pd.DataFrame({"query_id": ["Q1", "Q3"], "ref_id": ["R1", None]})
    assert ground_truth_pairs(df) == [("Q1", "R1")]  # blank ref_id rows only validate query ids
    with pytest.raises(ValueError, match=r"lacks columns \['ref_id'\]"):
        ground_truth_pairs(pd.DataFrame({"query_id": ["Q1"]}))


def test_integer_ids_in_csv_become_canonical(tmp_path):
    (tmp_path / "gt.csv").write_text("query_id,ref_id\n1,2\n")
    assert read_descriptor_ground_truth(tmp_path / "gt.csv") == [("Q000001", "R000002")]
