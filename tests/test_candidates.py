"""Per-query matching candidates: a query's matches depend on that query and the references alone."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.evaluation.descriptor_track import descriptor_track_candidates
from runtime.io.descriptors import VideoDescriptors
from runtime.matching.localization import LocalizationConfig
from runtime.matching.matcher import MatchingConfig, find_matches
from runtime.search.candidates import per_query_candidates
from runtime.search.index import ReferenceIndex

DIM = 16


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _video(video_id: str, features: np.ndarray) -> VideoDescriptors:
    t = np.arange(len(features), dtype=np.float32)
    return VideoDescriptors(video_id, np.stack([t, t + 1], axis=1), _unit(features))


@pytest.fixture(scope="module")
def dataset():
    """20 references of 30 s sharing a common component c; Q-copy is an edited copy of 10 s of R05
    (the shared component lost: similarity ~0.55 to its source, ~0 to the rest); four 'loud'
    queries lie along c, so every one of their frame pairs (~0.8) outscores the copy's: exactly
    the situation in which a global top-K over all queries drops a weak true pair."""
    rng = np.random.default_rng(0)
    c = _unit(rng.normal(size=(1, DIM)))[0]

    def noise(n: int, scale: float = 1.0) -> np.ndarray:
        x = scale * rng.normal(size=(n, DIM)).astype(np.float32) / np.sqrt(DIM)
        return x

    def without_c(x: np.ndarray) -> np.ndarray:
        return x - np.outer(x @ c, c)

    refs = [_video(f"R{i:02d}", 0.8 * c + 0.6 * _unit(rng.normal(size=(30, DIM)))) for i in range(20)]
    copy = without_c(refs[5].features[10:20]) + noise(10, 0.2)
    target = _video("Q-copy", np.concatenate([without_c(noise(5)), copy, without_c(noise(5))]))
    loud = [_video(f"Q-loud{i}", c + noise(40, 0.05)) for i in range(4)]
    return target, loud, refs


CONFIG = MatchingConfig(score_normalization=None, localization=LocalizationConfig(min_similarity=0.45))


def _of(matches, query_id):
    return [m for m in matches if m.query_id == query_id]


def test_query_alone_and_in_a_subset_get_identical_matches(dataset):
    target, loud, refs = dataset
    alone = find_matches([target], refs, config=CONFIG, already_normalized=True)
    in_subset = find_matches([*loud[:2], target, *loud[2:]], refs, config=CONFIG, already_normalized=True)
    assert alone, "the planted copy must be found"
    best = max(alone, key=lambda m: m.score)
    assert best.ref_id == "R05" and best.query_start < 15 and best.query_end > 5 and best.ref_start < 20 and best.ref_end > 10
    assert _of(in_subset, "Q-copy") == alone  # identical values, not just close
    in_other_subset = find_matches([target, *loud[::3]], refs, config=CONFIG, already_normalized=True)
    assert _of(in_other_subset, "Q-copy") == alone


def test_the_subset_would_change_a_global_cut(dataset):
    """The oracle above can fail: with the global search the same query loses its true pair."""
    target, loud, refs = dataset
    alone = {(c.query_id, c.ref_id) for c in descriptor_track_candidates([target], refs)}
    crowded = {(c.query_id, c.ref_id) for c in descriptor_track_candidates([target, *loud], refs)}
    assert ("Q-copy", "R05") in alone
    assert ("Q-copy", "R05") not in crowded


@pytest.mark.parametrize("k, cap", [(1, 1), (3, 2), (5, 25), (100, 4)])
def test_per_query_candidates_match_brute_force(dataset, k, cap):
    target, loud, refs = dataset
    queries = [target, *loud]
    got = per_query_candidates(queries, ReferenceIndex(refs), k, cap)
    ref_rows = np.concatenate([r.features for r in refs])
    owner = np.repeat(np.arange(len(refs)), [len(r) for r in refs])
    expected = []
    for q in queries:
        sims = q.features.astype(np.float64) @ ref_rows.T.astype(np.float64)
        best: dict[int, float] = {}
        for row in sims:
            for j in np.argsort(-row, kind="stable")[: min(k, len(ref_rows))]:
                best[owner[j]] = max(best.get(owner[j], -np.inf), row[j])
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:cap]
        expected += [(q.video_id, refs[r].video_id, s) for r, s in ranked]
    assert sorted((c.query_id, c.ref_id) for c in got) == sorted((q, r) for q, r, _ in expected)
    scores = {(q, r): s for q, r, s in expected}
    for c in got:
        assert c.score == pytest.approx(scores[(c.query_id, c.ref_id)], abs=1e-5)
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)
    per_query = {q.video_id: sum(c.query_id == q.video_id for c in got) for q in queries}
    assert max(per_query.values()) <= cap


def test_per_query_candidates_reject_bad_parameters(dataset):
    _, _, refs = dataset
    with pytest.raises(ValueError, match="must be >= 1, got 0 and 3"):
        per_query_candidates([], ReferenceIndex(refs), 0, 3)


def test_empty_inputs_give_no_matches(dataset):
    target, _, refs = dataset
    empty = VideoDescriptors("Q-empty", np.zeros((0, 2), np.float32), np.zeros((0, DIM), np.float32))
    assert find_matches([empty], refs, config=CONFIG, already_normalized=True) == []
    assert find_matches([target], [], config=CONFIG, already_normalized=True) == []
