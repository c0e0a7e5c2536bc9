"""Score normalisation: the extra-dimension identity, hub demotion, limits, noise-set I/O."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.io.descriptors import VideoDescriptors
from runtime.postprocess.score_normalization import (
    ScoreNormalization,
    drop_dimension,
    fit_noise_set,
    load_noise_set,
    lowest_variance_dim,
    normalize_queries,
    normalize_references,
    save_noise_set,
)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _video(video_id: str, features: np.ndarray) -> VideoDescriptors:
    n = len(features)
    timestamps = np.stack([np.arange(n), np.arange(n) + 1], axis=1).astype(np.float32)
    return VideoDescriptors(video_id, timestamps, features.astype(np.float32))


def _brute_force_bias(q: np.ndarray, noise: np.ndarray, k: int, aggregation: str) -> np.ndarray:
    sims = np.sort(q.astype(np.float64) @ noise.astype(np.float64).T, axis=1)[:, ::-1][:, :k]
    return sims.mean(axis=1) if aggregation == "mean" else sims[:, 0]


def test_shapes_dtype_and_timestamps() -> None:
    rng = np.random.default_rng(0)
    queries = [_video("Q1", _unit(rng, 5, 16)), _video("Q2", _unit(rng, 3, 16))]
    refs = [_video("R1", _unit(rng, 4, 16))]
    noise = _unit(rng, 50, 16)
    sn_queries = normalize_queries(queries, noise)
    sn_refs = normalize_references(refs)
    assert [q.video_id for q in sn_queries] == ["Q1", "Q2"]
    assert [q.features.shape for q in sn_queries] == [(5, 17), (3, 17)]
    assert sn_refs[0].features.shape == (4, 17)
    assert all(v.features.dtype == np.float32 for v in sn_queries + sn_refs)
    np.testing.assert_array_equal(sn_queries[1].timestamps, queries[1].timestamps)
    np.testing.assert_array_equal(sn_refs[0].features[:, -1], 1.0)
    # Biases of unit vectors against noise are positive on average, so the extra dim is negative.
    assert (sn_queries[0].features[:, -1] < 0).all()


@pytest.mark.parametrize("aggregation", ["mean", "max"])
@pytest.mark.parametrize("l2_normalize", [True, False])
def test_extra_dimension_gives_normalised_inner_product(aggregation: str, l2_normalize: bool) -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((7, 32)).astype(np.float32) * 3
    r = rng.standard_normal((9, 32)).astype(np.float32) * 2
    noise = rng.standard_normal((40, 32)).astype(np.float32)
    config = ScoreNormalization(beta=1.2, k=10, aggregation=aggregation, l2_normalize=l2_normalize)
    (sn_q,) = normalize_queries([_video("Q", q)], noise, config)
    (sn_r,) = normalize_references([_video("R", r)], config)
    if l2_normalize:
        q, r = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (q, r))
        noise = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    expected = q @ r.T - 1.2 * _brute_force_bias(q, noise, 10, aggregation)[:, None]
    np.testing.assert_allclose(sn_q.features @ sn_r.features.T, expected, atol=1e-4)


def test_hub_query_is_demoted_below_specific_query() -> None:
    rng = np.random.default_rng(2)
    d = 64
    hub_direction = _unit(rng, 1, d)[0]
    # Training references crowd around one direction (think black frames, logos, talking heads).
    noise = hub_direction + 0.3 * _unit(rng, 200, d)
    noise = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    ref = _unit(rng, 1, d)[0]
    specific_direction = _unit(rng, 1, d)[0]

    def query_with_similarity(direction: np.ndarray, target: float) -> np.ndarray:
        # Unit vector mixing the reference and `direction` so that q . ref == target exactly.
        ortho = direction - (direction @ ref) * ref
        ortho /= np.linalg.norm(ortho)
        return (target * ref + np.sqrt(1 - target**2) * ortho).astype(np.float32)

    hub = query_with_similarity(hub_direction, 0.6)
    specific = query_with_similarity(specific_direction, 0.6)
    raw = np.array([hub @ ref, specific @ ref])
    np.testing.assert_allclose(raw, [0.6, 0.6], atol=1e-5)
    sn_q = normalize_queries([_video("Qhub", hub[None]), _video("Qspec", specific[None])], noise)
    (sn_r,) = normalize_references([_video("R", ref[None].astype(np.float32))])
    hub_score = float((sn_q[0].features @ sn_r.features.T)[0, 0])
    specific_score = float((sn_q[1].features @ sn_r.features.T)[0, 0])
    assert hub_score < specific_score - 0.2


def test_dimension_limit() -> None:
    rng = np.random.default_rng(3)
    queries = [_video("Q", _unit(rng, 2, 512))]
    with pytest.raises(ValueError, match=re.escape("512 + 1 = 513 exceeds the limit of 512")):
        normalize_queries(queries, _unit(rng, 4, 512))
    with pytest.raises(ValueError, match="513"):
        normalize_references([_video("R", _unit(rng, 2, 512))])
    # 511 dims fit exactly.
    (out,) = normalize_queries([_video("Q", _unit(rng, 2, 511))], _unit(rng, 4, 511))
    assert out.dim == 512


def test_dimension_mismatches_raise() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="noise dimension 8 does not match descriptor dimension 16"):
        normalize_queries([_video("Q", _unit(rng, 2, 16))], _unit(rng, 4, 8))
    with pytest.raises(ValueError, match=re.escape("[8, 16]")):
        normalize_references([_video("R1", _unit(rng, 2, 16)), _video("R2", _unit(rng, 2, 8))])
    with pytest.raises(ValueError, match="non-empty"):
        normalize_queries([_video("Q", _unit(rng, 2, 16))], np.zeros((0, 16), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": -1.0}, "beta must be"),
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"aggregation": "median"}, "aggregation must be one of"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ScoreNormalization(**kwargs)


def test_k_larger_than_noise_uses_all_noise() -> None:
    rng = np.random.default_rng(5)
    q, noise = _unit(rng, 3, 8), _unit(rng, 4, 8)
    (sn_q,) = normalize_queries([_video("Q", q)], noise, ScoreNormalization(beta=1.0, k=10))
    np.testing.assert_allclose(sn_q.features[:, -1], -(q @ noise.T).mean(axis=1), atol=1e-5)


def test_normalisation_is_deterministic_and_batch_independent() -> None:
    rng = np.random.default_rng(6)
    queries = [_video(f"Q{i}", _unit(rng, 4 + i, 24)) for i in range(4)]
    noise = _unit(rng, 300, 24)
    together = normalize_queries(queries, noise)
    again = normalize_queries(queries, noise)
    alone = [normalize_queries([q], noise)[0] for q in queries]
    for a, b, c in zip(together, again, alone):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_allclose(a.features, c.features, atol=1e-6)


def test_fit_noise_set_is_deterministic_and_order_independent() -> None:
    rng = np.random.default_rng(7)
    refs = [_video(f"R{i:03d}", _unit(rng, 10, 8)) for i in range(20)]
    full = fit_noise_set(refs)
    assert full.shape == (200, 8) and full.dtype == np.float32
    sub = fit_noise_set(refs, max_vectors=50, seed=3)
    assert sub.shape == (50, 8)
    np.testing.assert_array_equal(sub, fit_noise_set(list(reversed(refs)), max_vectors=50, seed=3))
    assert not np.array_equal(sub, fit_noise_set(refs, max_vectors=50, seed=4))
    # Every kept row is a real training descriptor.
    assert np.isin(sub.view([("", sub.dtype)] * 8), full.view([("", full.dtype)] * 8)).all()
    with pytest.raises(ValueError, match="max_vectors must be >= 1"):
        fit_noise_set(refs, max_vectors=0)
    with pytest.raises(ValueError, match="at least one"):
        fit_noise_set([])


def test_noise_set_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(8)
    noise = rng.standard_normal((30, 12))  # float64 in, float32 out
    path = save_noise_set(tmp_path / "model_assets" / "noise.npz", noise)
    loaded = load_noise_set(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, noise.astype(np.float32))
    np.savez(tmp_path / "other.npz", features=loaded)
    with pytest.raises(ValueError, match="no 'noise' array"):
        load_noise_set(tmp_path / "other.npz")


def test_drop_lowest_variance_dimension_makes_512_fit() -> None:
    rng = np.random.default_rng(9)
    noise = rng.standard_normal((100, 512)).astype(np.float32)
    noise[:, 17] *= 0.01
    assert lowest_variance_dim(noise) == 17
    queries = drop_dimension([_video("Q", _unit(rng, 3, 512))], 17)
    assert queries[0].dim == 511
    (out,) = normalize_queries(queries, np.delete(noise, 17, axis=1))
    assert out.dim == 512
    with pytest.raises(ValueError, match=re.escape("index must be in [0, 511), got 511")):
        drop_dimension(queries, 511)


@settings(max_examples=25, deadline=None)
@given(
    n_q=st.integers(1, 6),
    n_r=st.integers(1, 6),
    n_noise=st.integers(1, 30),
    dim=st.integers(1, 40),
    k=st.integers(1, 12),
    beta=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_identity_holds_for_random_shapes(n_q, n_r, n_noise, dim, k, beta, seed) -> None:
    rng = np.random.default_rng(seed)
    q, r, noise = _unit(rng, n_q, dim), _unit(rng, n_r, dim), _unit(rng, n_noise, dim)
    config = ScoreNormalization(beta=beta, k=k)
    (sn_q,) = normalize_queries([_video("Q", q)], noise, config)
    (sn_r,) = normalize_references([_video("R", r)], config)
    assert sn_q.features.shape == (n_q, dim + 1) and sn_q.features.dtype == np.float32
    expected = q @ r.T - beta * _brute_force_bias(q, noise, min(k, n_noise), "mean")[:, None]
    np.testing.assert_allclose(sn_q.features @ sn_r.features.T, expected, atol=1e-4)
