"""Temporal localisation on synthetic descriptor sequences with known copied segments."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.io.descriptors import VideoDescriptors
from runtime.matching.localization import (
    LocalizationConfig,
    SegmentMatch,
    localize,
    localize_pair,
)

DIM = 128
# Raw cosine similarities of random 128-d unit vectors have std ~0.09: 0.5 is never reached by chance.
RAW = LocalizationConfig(min_similarity=0.5, min_mean_similarity=0.5, min_segment_seconds=3.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _random(rng: np.random.Generator, n: int) -> np.ndarray:
    return _unit(rng.standard_normal((n, DIM)))


def _video(video_id: str, features: np.ndarray, period: float = 1.0) -> VideoDescriptors:
    n = len(features)
    starts = np.arange(n, dtype=np.float32) * period
    return VideoDescriptors(video_id, np.stack([starts, starts + period], axis=1), features.astype(np.float32))


def _paste(
    rng: np.random.Generator,
    query: np.ndarray,
    ref: np.ndarray,
    q_start: int,
    r_start: int,
    length: int,
    speed: float = 1.0,
    noise: float = 0.3,
) -> None:
    """Copy ``ref`` into ``query[q_start:q_start+length]`` played at ``speed``, plus noise (edits)."""
    r_idx = r_start + np.floor(np.arange(length) * speed).astype(int)
    query[q_start : q_start + length] = _unit(ref[r_idx] + noise * _random(rng, length))


def _assert_segment(m: SegmentMatch, q: tuple[float, float], r: tuple[float, float], tol: float = 1.0) -> None:
    assert abs(m.query_start - q[0]) <= tol and abs(m.query_end - q[1]) <= tol, m
    assert abs(m.ref_start - r[0]) <= tol and abs(m.ref_end - r[1]) <= tol, m


def test_recovers_single_copy() -> None:
    rng = np.random.default_rng(0)
    ref, query = _random(rng, 60), _random(rng, 45)
    _paste(rng, query, ref, 20, 30, 10)
    (m,) = localize_pair(_video("Q", query), _video("R", ref), RAW)
    _assert_segment(m, (20, 30), (30, 40))
    assert 0.8 < m.score <= 1.0


@pytest.mark.parametrize(
    ("speed", "length", "ref_end"),
    [(2.0, 15, 20 + 29), (0.5, 30, 20 + 15), (1.5, 16, 20 + 23)],
)
def test_recovers_speed_changed_copy(speed: float, length: int, ref_end: int) -> None:
    rng = np.random.default_rng(1)
    ref, query = _random(rng, 80), _random(rng, 60)
    _paste(rng, query, ref, 10, 20, length, speed=speed)
    (m,) = localize_pair(_video("Q", query), _video("R", ref), RAW)
    _assert_segment(m, (10, 10 + length), (20, ref_end))


def test_short_copy_inside_long_query() -> None:
    rng = np.random.default_rng(2)
    ref, query = _random(rng, 40), _random(rng, 300)
    _paste(rng, query, ref, 200, 3, 6)
    (m,) = localize_pair(_video("Q", query), _video("R", ref), RAW)
    _assert_segment(m, (200, 206), (3, 9))


def test_two_separate_copies_in_one_pair() -> None:
    rng = np.random.default_rng(3)
    ref, query = _random(rng, 70), _random(rng, 60)
    _paste(rng, query, ref, 5, 40, 10, noise=0.2)
    _paste(rng, query, ref, 30, 10, 12, noise=0.6)  # a heavier edit: lower similarity
    matches = localize_pair(_video("Q", query), _video("R", ref), RAW)
    assert len(matches) == 2
    _assert_segment(matches[0], (5, 15), (40, 50))
    _assert_segment(matches[1], (30, 42), (10, 22))
    assert matches[0].score > matches[1].score


def test_same_reference_segment_copied_twice() -> None:
    rng = np.random.default_rng(4)
    ref, query = _random(rng, 30), _random(rng, 50)
    _paste(rng, query, ref, 2, 10, 8)
    _paste(rng, query, ref, 30, 10, 8)
    matches = sorted(localize_pair(_video("Q", query), _video("R", ref), RAW))
    assert len(matches) == 2
    _assert_segment(matches[0], (2, 10), (10, 18))
    _assert_segment(matches[1], (30, 38), (10, 18))


def test_flipped_copy_scores_lower_but_is_found() -> None:
    rng = np.random.default_rng(5)
    ref = _random(rng, 40)
    clean, edited = _random(rng, 30), _random(rng, 30)
    _paste(rng, clean, ref, 5, 5, 12, noise=0.2)
    # A horizontal flip keeps some of the descriptor: mix the copy with an unrelated direction.
    _paste(rng, edited, ref, 5, 5, 12, noise=0.9)
    (m_clean,) = localize_pair(_video("Q1", clean), _video("R", ref), RAW)
    (m_edited,) = localize_pair(_video("Q2", edited), _video("R", ref), RAW)
    _assert_segment(m_edited, (5, 17), (5, 17))
    assert m_clean.score > m_edited.score


def test_paths_only_move_forward_within_speed_bounds() -> None:
    rng = np.random.default_rng(13)
    ref = _random(rng, 80)
    reversed_copy, too_fast = _random(rng, 40), _random(rng, 40)
    reversed_copy[10:25] = _unit(ref[40:25:-1] + 0.3 * _random(rng, 15))
    _paste(rng, too_fast, ref, 5, 0, 18, speed=4.0)  # 4x exceeds max_speed_ratio=3
    assert localize_pair(_video("Q1", reversed_copy), _video("R", ref), RAW) == []
    assert localize_pair(_video("Q2", too_fast), _video("R", ref), RAW) == []
    # The same 4x copy is accepted once the bound allows it.
    relaxed = LocalizationConfig(**{**RAW.__dict__, "max_speed_ratio": 4.5})
    (m,) = localize_pair(_video("Q2", too_fast), _video("R", ref), relaxed)
    _assert_segment(m, (5, 23), (0, 69))


def test_unrelated_pair_returns_nothing() -> None:
    rng = np.random.default_rng(6)
    for trial in range(5):
        query, ref = _random(rng, 50), _random(rng, 80)
        assert localize_pair(_video("Q", query), _video("R", ref), RAW) == [], trial


def test_copies_outrank_noise_even_with_a_permissive_threshold() -> None:
    rng = np.random.default_rng(7)
    permissive = LocalizationConfig(min_similarity=0.15, min_mean_similarity=0.15, min_segment_seconds=2.0)
    refs = [_video(f"R{i}", _random(rng, 60)) for i in range(4)]
    queries = [_video(f"Q{i}", _random(rng, 40)) for i in range(4)]
    _paste(rng, queries[0].features, refs[0].features, 10, 20, 12, noise=0.8)
    _paste(rng, queries[1].features, refs[1].features, 0, 30, 8, speed=2.0, noise=0.8)
    candidates = [(q.video_id, r.video_id, 0.0) for q in queries for r in refs]
    rows = localize(queries, refs, candidates, permissive)
    true_pairs = {("Q0", "R0"), ("Q1", "R1")}
    best_true = {pair: max(row.score for row in rows if (row.query_id, row.ref_id) == pair) for pair in true_pairs}
    noise_scores = [row.score for row in rows if (row.query_id, row.ref_id) not in true_pairs]
    assert noise_scores, "a permissive threshold should let some chance paths through"
    assert min(best_true.values()) > max(noise_scores)


def test_single_descriptor_videos() -> None:
    rng = np.random.default_rng(8)
    ref = _random(rng, 20)
    single_query = _video("Q", ref[7:8].copy())
    one_sample = LocalizationConfig(min_similarity=0.5, min_segment_seconds=0.0)
    (m,) = localize_pair(single_query, _video("R", ref), one_sample)
    assert m == SegmentMatch(0.0, 1.0, 7.0, 8.0, pytest.approx(1.0, abs=1e-5))
    assert localize_pair(single_query, _video("R", ref), RAW) == []  # shorter than 3 s
    (m,) = localize_pair(_video("Q", ref), _video("R1", ref[3:4].copy()), one_sample)
    assert (m.query_start, m.query_end, m.ref_start, m.ref_end) == (3.0, 4.0, 0.0, 1.0)
    empty = VideoDescriptors("E", np.zeros((0, 2), np.float32), np.zeros((0, DIM), np.float32))
    assert localize_pair(empty, _video("R", ref), one_sample) == []


def test_uses_descriptor_timestamps() -> None:
    rng = np.random.default_rng(9)
    ref, query = _random(rng, 40), _random(rng, 40)
    _paste(rng, query, ref, 10, 20, 10)
    (m,) = localize_pair(_video("Q", query, period=0.5), _video("R", ref, period=1.5), RAW)
    _assert_segment(m, (5.0, 10.0), (30.0, 45.0), tol=0.0)


def test_localize_rows_candidates_and_candidate_score() -> None:
    rng = np.random.default_rng(10)
    ref, query = _random(rng, 40), _random(rng, 40)
    _paste(rng, query, ref, 10, 20, 10)
    queries, refs = {"Q": _video("Q", query)}, [_video("R", ref), _video("R2", _random(rng, 30))]
    rows = localize(queries, refs, [("Q", "R", 0.4), ("Q", "R2", 0.3), ("Q", "R", 0.4)], RAW)
    assert len(rows) == 1
    row = rows[0]
    assert (row.query_id, row.ref_id) == ("Q", "R")
    mixed = LocalizationConfig(**{**RAW.__dict__, "candidate_score_weight": 0.5})
    (mixed_row,) = localize(queries, refs, [("Q", "R", 0.4)], mixed)
    assert mixed_row.score == pytest.approx(0.5 * row.score + 0.5 * 0.4)
    with pytest.raises(KeyError, match="'R9'"):
        localize(queries, refs, [("Q", "R9", 1.0)], RAW)
    with pytest.raises(ValueError, match="needs the pair's candidate_score"):
        localize_pair(queries["Q"], refs[0], mixed)


def test_dimension_mismatch_raises() -> None:
    rng = np.random.default_rng(11)
    q = _video("Q", _random(rng, 5))
    r = VideoDescriptors("R", q.timestamps, q.features[:, :64].copy())
    with pytest.raises(ValueError, match="dim 128 but ref R has dim 64"):
        localize_pair(q, r)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top_k must be an integer >= 1, got 0"),
        ({"max_step": 1}, "max_step must be an integer >= 2"),
        ({"max_speed_ratio": 0.5}, "max_speed_ratio must be >= 1, got 0.5"),
        ({"score_aggregation": "sum"}, "score_aggregation must be one of ('max', 'mean'), got 'sum'"),
        ({"candidate_score_weight": 2.0}, "candidate_score_weight must be in [0, 1], got 2.0"),
        ({"min_similarity": float("nan")}, "min_similarity must be finite"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LocalizationConfig(**kwargs)


@settings(max_examples=30, deadline=None)
@given(
    n_q=st.integers(1, 40),
    n_r=st.integers(1, 40),
    copy_len=st.integers(0, 15),
    min_similarity=st.floats(-0.2, 0.6),
    aggregation=st.sampled_from(["max", "mean"]),
    seed=st.integers(0, 2**16),
)
def test_outputs_are_well_formed(n_q, n_r, copy_len, min_similarity, aggregation, seed) -> None:
    rng = np.random.default_rng(seed)
    ref, query = _random(rng, n_r), _random(rng, n_q)
    length = min(copy_len, n_q, n_r)
    if length:
        _paste(rng, query, ref, rng.integers(0, n_q - length + 1), rng.integers(0, n_r - length + 1), length)
    config = LocalizationConfig(
        min_similarity=min_similarity,
        min_mean_similarity=min_similarity,
        min_segment_seconds=1.0,
        score_aggregation=aggregation,
        max_segments=3,
    )
    q, r = _video("Q", query), _video("R", ref)
    matches = localize_pair(q, r, config)
    assert matches == localize_pair(q, r, config)  # deterministic
    assert len(matches) <= 3
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    for m in matches:
        assert 0 <= m.query_start < m.query_end <= n_q
        assert 0 <= m.ref_start < m.ref_end <= n_r
        assert min(m.query_end - m.query_start, m.ref_end - m.ref_start) >= 1.0
        assert min_similarity - 1e-6 <= m.score <= 1.0 + 1e-5
    # Accepted boxes never overlap by more than max_iou (here in seconds == samples).
    for i, a in enumerate(matches):
        for b in matches[i + 1 :]:
            dq = min(a.query_end, b.query_end) - max(a.query_start, b.query_start)
            dr = min(a.ref_end, b.ref_end) - max(a.ref_start, b.ref_start)
            inter = max(dq, 0) * max(dr, 0)
            area = lambda m: (m.query_end - m.query_start) * (m.ref_end - m.ref_start)  # noqa: E731
            assert inter / (area(a) + area(b) - inter) <= config.max_iou + 1e-9


def test_default_config_on_score_normalised_descriptors() -> None:
    from runtime.postprocess.score_normalization import (
        fit_noise_set,
        normalize_queries,
        normalize_references,
    )

    rng = np.random.default_rng(12)
    train_refs = [_video(f"T{i}", _random(rng, 50)) for i in range(20)]
    refs = [_video(f"R{i}", _random(rng, 90)) for i in range(3)]
    queries = [_video(f"Q{i}", _random(rng, 40)) for i in range(3)]
    _paste(rng, queries[0].features, refs[0].features, 12, 50, 20, noise=0.7)
    _paste(rng, queries[1].features, refs[1].features, 0, 5, 16, speed=2.0, noise=0.7)
    noise = fit_noise_set(train_refs, max_vectors=500, seed=0)
    sn_queries, sn_refs = normalize_queries(queries, noise), normalize_references(refs)
    candidates = [(q.video_id, r.video_id, 0.0) for q in queries for r in refs]
    rows = sorted(localize(sn_queries, sn_refs, candidates), key=lambda row: row.score, reverse=True)
    # The two copies come first, far above any chance path (score-normalised noise sits near 0).
    assert {(row.query_id, row.ref_id) for row in rows[:2]} == {("Q0", "R0"), ("Q1", "R1")}
    assert min(row.score for row in rows[:2]) > 0.4
    assert all(row.score < 0.15 for row in rows[2:])
    by_pair = {(row.query_id, row.ref_id): row for row in rows[:2]}
    for pair, query_span, ref_span in ((("Q0", "R0"), (12, 32), (50, 70)), (("Q1", "R1"), (0, 16), (5, 36))):
        m = by_pair[pair]
        _assert_segment(SegmentMatch(m.query_start, m.query_end, m.ref_start, m.ref_end, m.score), query_span, ref_span)
