"""Learned discriminative whitening (onnx_export.fit_postprocessing.fit_learned_whitening) against closed-form oracles."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_export.fit_postprocessing import fit_learned_whitening
from runtime.postprocess.projection import Projection


def _pairs(seed: int = 0, n: int = 400, copies: int = 3):
    """Images differ in dims 0..3 (variance 1); edits move copies along dims 4..7 (variance 25), a little elsewhere."""
    rng = np.random.default_rng(seed)
    d = 12
    originals = np.zeros((n, d))
    originals[:, :4] = rng.normal(size=(n, 4))
    originals[:, 8:] = 0.1 * rng.normal(size=(n, 4))
    source = np.repeat(np.arange(n), copies)
    copies_x = originals[source].copy()
    copies_x[:, 4:8] += 5.0 * rng.normal(size=(len(source), 4))
    copies_x[:, :4] += 0.1 * rng.normal(size=(len(source), 4))
    copies_x[:, 8:] += 0.1 * rng.normal(size=(len(source), 4))
    return originals, copies_x, source


def test_keeps_the_directions_images_differ_in_and_drops_the_edit_directions():
    originals, copies, source = _pairs()
    learned = fit_learned_whitening(originals, copies, source, dim=4, shrinkage=0.0)
    m = learned.matrix.astype(np.float64)
    # The output depends (almost) only on the image dims 0..3, not on the edit dims 4..7.
    assert np.abs(m[4:8]).max() < 0.05 * np.abs(m[:4]).max()
    # Unsupervised PCA keeps the high-variance edit directions instead (what the learned step fixes).
    pca = Projection.fit(np.concatenate([originals, copies]).astype(np.float32), dim=4, whiten=False)
    assert np.abs(pca.matrix[4:8]).sum() > np.abs(pca.matrix[:4]).sum()
    # So copies find their own original far more often than with PCA (chance: 1/400).
    def top1(projection):
        q, r = projection.apply(copies.astype(np.float32)), projection.apply(originals.astype(np.float32))
        return np.mean(np.argmax(q @ r.T, axis=1) == source)

    assert top1(learned) > 0.75 and top1(pca) < 0.1


def test_whitens_the_pair_differences():
    originals, copies, source = _pairs(seed=1)
    learned = fit_learned_whitening(originals, copies, source, dim=12, shrinkage=0.0)
    diffs = originals[source] - copies
    c_s = diffs.T @ diffs / len(diffs)
    np.testing.assert_allclose(learned.matrix.T.astype(np.float64) @ c_s @ learned.matrix, np.eye(12), atol=1e-3)
    np.testing.assert_allclose(learned.mean, np.concatenate([originals, copies]).mean(axis=0), atol=1e-6)


def test_full_shrinkage_is_pca_of_all_descriptors():
    originals, copies, source = _pairs(seed=2)
    learned = fit_learned_whitening(originals, copies, source, dim=5, shrinkage=1.0)
    everything = np.concatenate([originals, copies])
    _, _, vt = np.linalg.svd(everything - everything.mean(axis=0), full_matrices=False)
    cols = learned.matrix / np.linalg.norm(learned.matrix, axis=0)
    # Same subspace and directions up to sign as the top-5 principal axes.
    np.testing.assert_allclose(np.abs(cols.T @ vt[:5].T), np.eye(5), atol=1e-4)


def test_round_trips_through_the_projection_file(tmp_path):
    originals, copies, source = _pairs(seed=3)
    learned = fit_learned_whitening(originals, copies, source, dim=6, source_text="unit test")
    learned.save(tmp_path / "p.npz")
    loaded = Projection.load(tmp_path / "p.npz")
    assert loaded.source == "unit test" and loaded.whitened and loaded.output_dim == 6
    x = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    np.testing.assert_allclose(loaded.apply(x), learned.apply(x), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"dim": 0}, "dim must be in"), ({"dim": 13}, "dim must be in"), ({"shrinkage": 1.5}, "shrinkage must be in"),
     ({"source": np.zeros(2, int)}, "M source indices")],
)
def test_bad_arguments(kwargs, message):
    originals, copies, source = _pairs(n=20, copies=1)
    args = {"originals": originals, "copies": copies, "source": source, "dim": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_learned_whitening(**args)


def test_fit_command_writes_a_learned_projection_and_noise_set(tmp_path):
    """``python -m onnx_export.fit_postprocessing --pack`` end to end on a tiny pack, into a copy of the assets."""
    import json
    import shutil

    pytest.importorskip("augly")
    from onnx_export import fit_postprocessing
    from onnx_export.training_pack import PackItem, procedural_image, write_pack
    from runtime.model_manifest import ModelManifest, default_model_dir
    from runtime.postprocess.score_normalization import load_noise_set

    src = default_model_dir()
    model_dir = tmp_path / "assets"
    model_dir.mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    for name in ("manifest.json", manifest["onnx_file"]):
        shutil.copy(src / name, model_dir / name)
    items = [PackItem(f"p{i}", f"g{i // 2}", lambda i=i: procedural_image(i, size=96), {"kind": "procedural"}) for i in range(6)]
    pack = tmp_path / "pack.tar"
    write_pack(pack, items)
    assert fit_postprocessing.main(["--pack", str(pack), "--model-dir", str(model_dir), "--dim", "8",
                                    "--copies-per-image", "2", "--cache", str(tmp_path / "emb.npz")]) == 0
    fitted = ModelManifest.load(model_dir)
    projection = Projection.load(fitted.projection_path)
    assert (projection.input_dim, projection.output_dim) == (1280, 8) and "learned whitening" in projection.source
    noise = load_noise_set(fitted.noise_set_path)
    assert noise.shape == (6, 8)
    np.testing.assert_allclose(np.linalg.norm(noise, axis=1), 1.0, rtol=1e-5)
    fit = json.loads((model_dir / "manifest.json").read_text())["postprocessing_fit"]
    assert fit["method"] == "learned" and fit["dim"] == 8 and fit["copies_per_image"] == 2
    # The cache is reused: same embeddings, same projection.
    assert fit_postprocessing.main(["--pack", str(pack), "--model-dir", str(model_dir), "--dim", "8",
                                    "--copies-per-image", "2", "--cache", str(tmp_path / "emb.npz")]) == 0
    np.testing.assert_array_equal(Projection.load(fitted.projection_path).matrix, projection.matrix)
