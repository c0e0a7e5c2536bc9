import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.postprocess.budget import BudgetConfig, frame_priority, select_samples
from runtime.postprocess.postprocessor import Postprocessor
from runtime.postprocess.projection import Projection, l2_normalize
from runtime.records import VideoEmbeddings, VideoInfo


def _unit(rng, n, d):
    return l2_normalize(rng.standard_normal((n, d)))


def test_projection_fit_whitens_and_reduces(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32))
    proj = Projection.fit(x, dim=8, whiten=True, source="unit test")
    y = (x.astype(np.float32) - proj.mean) @ proj.matrix
    cov = np.cov(y, rowvar=False)
    np.testing.assert_allclose(cov, np.eye(8), atol=0.05)
    out = proj.apply(x)
    assert out.shape == (500, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    proj.save(tmp_path / "p.npz")
    again = Projection.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(again.matrix, proj.matrix)
    assert again.source == "unit test" and again.whitened


def test_projection_dim_errors():
    with pytest.raises(ValueError, match="dim must be in 1..16"):
        Projection.fit(np.ones((100, 16)), dim=17)
    proj = Projection(np.zeros(4, np.float32), np.eye(4, 2, dtype=np.float32))
    with pytest.raises(ValueError, match="expects 4-d input, got 3-d"):
        proj.apply(np.ones((1, 3)))


@pytest.mark.parametrize("duration, rate, cap", [(10.0, 1.0, 10), (10.2, 1.0, 11), (0.3, 1.0, 1), (10.0, 0.5, 5), (0.0, 1.0, 0)])
def test_cap(duration, rate, cap):
    assert BudgetConfig(descriptors_per_second=rate).cap(duration) == cap


def test_budget_config_validation():
    with pytest.raises(ValueError, match=r"in \(0, 1\], got 1.5"):
        BudgetConfig(descriptors_per_second=1.5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), duration=st.floats(0.1, 40.0), threshold=st.sampled_from([1.0, 0.95, 0.5]), seed=st.integers(0, 99))
def test_selection_respects_cap_and_order(n, duration, threshold, seed):
    emb = _unit(np.random.default_rng(seed), n, 16)
    config = BudgetConfig(duplicate_similarity=threshold)
    keep = select_samples(emb, duration, config)
    assert len(keep) <= config.cap(duration)
    assert np.all(np.diff(keep) > 0)
    assert len(set(keep.tolist())) == len(keep)
    if threshold < 1.0 and len(keep) > 1:
        sims = emb[keep] @ emb[keep].T
        np.fill_diagonal(sims, -1)
        assert sims.max() < threshold


def test_duplicates_pruned_and_budget_reused():
    rng = np.random.default_rng(1)
    distinct = _unit(rng, 4, 32)
    # 8 samples: a static shot repeated 5 times, then 3 distinct frames; cap is 4.
    emb = np.concatenate([np.repeat(distinct[:1], 5, axis=0), distinct[1:]])
    no_pruning = select_samples(emb, 4.0, BudgetConfig())
    with_pruning = select_samples(emb, 4.0, BudgetConfig(duplicate_similarity=0.99))
    assert len(no_pruning) == 4 and len(with_pruning) == 4
    assert set(with_pruning.tolist()) == {0, 5, 6, 7}


def test_frame_priority_first_and_changes():
    emb = l2_normalize(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32))
    np.testing.assert_allclose(frame_priority(emb), [2.0, 0.0, 1.0], atol=1e-6)


def test_postprocessor_projection_and_dim_limit():
    rng = np.random.default_rng(2)
    info = VideoInfo("x.mp4", 3.0, 10.0, 64, 48, "h264")
    intervals = np.array([[0, 1], [1, 2], [2, 3]], dtype=np.float64)
    video = VideoEmbeddings("Q1", intervals, _unit(rng, 3, 600), info)
    with pytest.raises(ValueError, match="600 dims"):
        Postprocessor()(video)
    proj = Projection.fit(rng.standard_normal((100, 600)), dim=16)
    out = Postprocessor(projection=proj)(video, duration=2.0)
    assert out.features.shape == (2, 16) and out.timestamps.dtype == np.float32
    assert out.video_id == "Q1"
