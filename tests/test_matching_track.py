"""Matching-track segment AP: hand-computed cases and a grid-counting reference."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.evaluation.matching_track import evaluate_matching_track
from runtime.io.ground_truth import read_matching_ground_truth
from runtime.io.matches import read_matches_csv, write_matches_csv
from runtime.records import Match


def m(qs, qe, rs, re, score=1.0, query_id="Q1", ref_id="R2") -> Match:
    return Match(query_id, ref_id, qs, qe, rs, re, score)


def ap(predictions, ground_truth) -> float:
    return evaluate_matching_track(predictions, ground_truth).ap


GT_BOX = [m(4, 14, 10, 18)]


def test_perfect_prediction_scores_one():
    result = evaluate_matching_track([m(4, 14, 10, 18, score=0.3)], GT_BOX)
    assert result.ap == pytest.approx(1.0)
    np.testing.assert_allclose(result.precisions, [1.0])
    np.testing.assert_allclose(result.recalls, [1.0])
    np.testing.assert_allclose(result.scores, [0.3])
    assert result.pairwise_uap == pytest.approx(1.0)


def test_segment_split_across_two_predictions_scores_one():
    assert ap([m(4, 8, 10, 14, score=1.0), m(8, 14, 14, 18, score=2.0)], GT_BOX) == pytest.approx(1.0)


def test_imperfect_calibrated_hand_computed():
    # score 2: q [8,14] -> 6/10, r [16,18] -> 2/8: R = sqrt(0.6 * 0.25), P = 1
    # score 1: q union [4,14] -> 10/10, r [10,14]u[16,18] -> 6/8: R = sqrt(0.75), P = 1
    # score 0: q [0,30] -> P_q 10/30, r [5,25] -> P_r 8/20; R = 1
    predictions = [m(4, 8, 10, 14, score=1.0), m(8, 14, 16, 18, score=2.0), m(0, 30, 5, 25, score=0.0)]
    r2, r1 = math.sqrt(0.15), math.sqrt(0.75)
    expected = r2 + (r1 - r2) + math.sqrt(10 / 30 * 8 / 20) * (1 - r1)
    result = evaluate_matching_track(predictions, GT_BOX)
    assert result.ap == pytest.approx(expected)
    np.testing.assert_allclose(result.recalls, [r2, r1, 1.0])
    np.testing.assert_allclose(result.precisions, [1.0, 1.0, math.sqrt(10 / 30 * 8 / 20)])
    np.testing.assert_allclose(result.scores, [2.0, 1.0, 0.0])


def test_imprecise_prediction_ranked_first_costs_ap():
    predictions = [m(4, 8, 10, 14, score=1.0), m(8, 14, 16, 18, score=2.0), m(0, 30, 5, 25, score=3.0)]
    # The first prediction already reaches recall 1 with P = sqrt(10/30 * 8/20).
    assert ap(predictions, GT_BOX) == pytest.approx(math.sqrt(10 / 30 * 8 / 20))


def test_gt_boxes_not_overlapping_any_prediction_are_ignored():
    # VCSL fig. 4(f): each axis overlaps, but no predicted box overlaps a GT box.
    gt = [m(4, 14, 10, 18), m(20, 28, 21, 29)]
    assert ap([m(4, 14, 21, 29), m(20, 28, 10, 18)], gt) == 0.0


def test_predictions_for_pairs_without_gt_lower_precision():
    gt = [m(4, 14, 10, 18, query_id="Q1", ref_id="R2")]
    predictions = [
        m(4, 14, 10, 18, score=3.0, query_id="Q2", ref_id="R2"),
        m(4, 14, 10, 18, score=2.0, query_id="Q1", ref_id="R1"),
        m(4, 14, 10, 18, score=1.0, query_id="Q1", ref_id="R2"),
    ]
    result = evaluate_matching_track(predictions, gt)
    # Recall jumps to 1 at the third prediction, when 10 of 30 predicted seconds are right.
    assert result.ap == pytest.approx(1 / 3)
    assert result.pairwise_uap == pytest.approx(1 / 3)


def test_tied_scores_are_processed_together():
    gt = [m(0, 10, 0, 10)]
    correct = m(0, 10, 0, 10, score=1.0)
    wrong = m(0, 10, 0, 10, score=1.0, query_id="Q9", ref_id="R9")
    # Added one by one the correct prediction first would give AP 1; together P = 1/2.
    assert ap([correct, wrong], gt) == pytest.approx(0.5)
    assert ap([wrong, correct], gt) == pytest.approx(0.5)


def test_query_with_two_references():
    gt = [m(0, 10, 0, 10, ref_id="R1"), m(20, 30, 0, 10, ref_id="R2")]
    only_r1 = [m(0, 10, 0, 10, score=2.0, ref_id="R1")]
    # GT length per axis sums over pairs (20 s each): one pair found -> R = 0.5, P = 1.
    assert ap(only_r1, gt) == pytest.approx(0.5)
    assert ap(only_r1 + [m(20, 30, 0, 10, score=1.0, ref_id="R2")], gt) == pytest.approx(1.0)


def test_empty_predictions_score_zero():
    result = evaluate_matching_track([], GT_BOX)
    assert result.ap == 0.0
    assert len(result.recalls) == 0
    assert result.num_predictions == 0


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="ground truth has no matches"):
        evaluate_matching_track([m(0, 1, 0, 1)], [])
    with pytest.raises(ValueError, match="positive on both axes"):
        evaluate_matching_track([m(0, 1, 0, 1)], [m(3, 3, 0, 1)])
    with pytest.raises(ValueError, match="end >= start"):
        m(5, 1, 0, 1)
    with pytest.raises(ValueError, match="finite"):
        m(0, 1, 0, 1, score=float("nan"))


def test_zero_length_predictions_do_not_crash():
    assert ap([m(4, 4, 10, 10, score=2.0), m(4, 14, 10, 18, score=1.0)], GT_BOX) == pytest.approx(1.0)


def test_prediction_order_does_not_matter():
    gt = [m(4, 14, 10, 18, query_id="Q1", ref_id="R2")]
    predictions = [
        m(4, 10, 10, 14, score=3.0, query_id="Q1", ref_id="R2"),
        m(4, 10, 10, 14, score=3.0, query_id="Q2", ref_id="R1"),
        m(4, 14, 10, 18, score=2.0, query_id="Q1", ref_id="R1"),
        m(4, 14, 10, 18, score=1.0, query_id="Q2", ref_id="R2"),
        m(4, 14, 10, 18, score=1.0, query_id="Q2", ref_id="R1"),
        m(10, 14, 14, 18, score=1.0, query_id="Q1", ref_id="R2"),
    ]
    rng = random.Random(0)
    values = set()
    for _ in range(10):
        rng.shuffle(predictions)
        values.add(ap(predictions, gt))
    assert len(values) == 1


def reference_ap(predictions, ground_truth, size):
    """Recompute P and R from scratch at every score level by counting unit grid cells."""
    pairs = {g.pair_id for g in ground_truth} | {p.pair_id for p in predictions}

    def cells_1d(intervals):
        covered = np.zeros(size, bool)
        for start, end in intervals:
            covered[int(start) : int(end)] = True
        return covered

    def box(match):
        covered = np.zeros((size, size), bool)
        covered[int(match.query_start) : int(match.query_end), int(match.ref_start) : int(match.ref_end)] = True
        return covered

    gt_length = [0, 0]
    for pair in pairs:
        gts = [g for g in ground_truth if g.pair_id == pair]
        gt_length[0] += cells_1d((g.query_start, g.query_end) for g in gts).sum()
        gt_length[1] += cells_1d((g.ref_start, g.ref_end) for g in gts).sum()

    total, recall = 0.0, 0.0
    for threshold in sorted({p.score for p in predictions}, reverse=True):
        inter, pred_len = [0, 0], [0, 0]
        for pair in pairs:
            preds = [p for p in predictions if p.pair_id == pair and p.score >= threshold]
            gts = [g for g in ground_truth if g.pair_id == pair and any((box(g) & box(p)).any() for p in preds)]
            for axis, (s, e) in enumerate((("query_start", "query_end"), ("ref_start", "ref_end"))):
                pred_cells = cells_1d((getattr(p, s), getattr(p, e)) for p in preds)
                gt_cells = cells_1d((getattr(g, s), getattr(g, e)) for g in gts)
                inter[axis] += (pred_cells & gt_cells).sum()
                pred_len[axis] += pred_cells.sum()
        new_recall = math.sqrt(inter[0] / gt_length[0] * inter[1] / gt_length[1])
        precision = math.sqrt(
            (inter[0] / pred_len[0] if pred_len[0] else 0.0) * (inter[1] / pred_len[1] if pred_len[1] else 0.0)
        )
        total += precision * (new_recall - recall)
        recall = new_recall
    return total


SIZE = 12


@st.composite
def matches(draw, with_score: bool, min_length: int):
    query_id = draw(st.sampled_from(["Q1", "Q2"]))
    ref_id = draw(st.sampled_from(["R1", "R2"]))
    qs = draw(st.integers(0, SIZE - 1 - min_length))
    qe = draw(st.integers(qs + min_length, SIZE - 1))
    rs = draw(st.integers(0, SIZE - 1 - min_length))
    re = draw(st.integers(rs + min_length, SIZE - 1))
    score = float(draw(st.integers(0, 3))) if with_score else 1.0
    return Match(query_id, ref_id, qs, qe, rs, re, score)


@settings(max_examples=80, deadline=None)
@given(
    ground_truth=st.lists(matches(with_score=False, min_length=1), min_size=1, max_size=4),
    predictions=st.lists(matches(with_score=True, min_length=0), max_size=6),
)
def test_segment_ap_matches_grid_reference(ground_truth, predictions):
    assert ap(predictions, ground_truth) == pytest.approx(reference_ap(predictions, ground_truth, SIZE), abs=1e-9)


def test_csv_round_trip(tmp_path):
    predictions = [m(1.5, 3, 2, 4.25, score=0.5), m(0, 1, 0, 1, score=2.0, query_id="Q7", ref_id="R8")]
    write_matches_csv(predictions, tmp_path / "pred.csv")
    header = (tmp_path / "pred.csv").read_text().splitlines()[0]
    assert header == "query_id,ref_id,query_start,query_end,ref_start,ref_end,score"
    assert read_matches_csv(tmp_path / "pred.csv") == predictions

    write_matches_csv(predictions, tmp_path / "gt.csv", is_ground_truth=True)
    gt_header = (tmp_path / "gt.csv").read_text().splitlines()[0]
    assert gt_header == "query_id,ref_id,query_start,query_end,ref_start,ref_end"
    assert read_matching_ground_truth(tmp_path / "gt.csv") == [
        Match(p.query_id, p.ref_id, p.query_start, p.query_end, p.ref_start, p.ref_end, 1.0) for p in predictions
    ]


def test_csv_columns_in_any_order_and_integer_ids():
    gt = read_matches_csv(
        io.StringIO("query_start,query_end,ref_start,ref_end,query_id,ref_id\n4,14,10,18,Q000001,R000002\n"),
        is_ground_truth=True,
    )
    predictions = read_matches_csv(
        io.StringIO(
            "query_id,ref_id,query_start,query_end,ref_start,ref_end,score\n"
            "2,2,4,14,10,18,3.0\n1,1,4,14,10,18,2.0\n1,2,4,14,10,18,1.0\n"
        )
    )
    assert predictions[2].pair_id == ("Q000001", "R000002")
    assert ap(predictions, gt) == pytest.approx(1 / 3)


def test_csv_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"missing columns \['score'\]"):
        read_matches_csv(io.StringIO("query_id,ref_id,query_start,query_end,ref_start,ref_end\nQ1,R1,0,1,0,1\n"))
    with pytest.raises(ValueError, match=r"empty cells in columns \['ref_end'\]"):
        read_matches_csv(
            io.StringIO("query_id,ref_id,query_start,query_end,ref_start,ref_end\nQ1,R1,0,1,0,\n"), is_ground_truth=True
        )
