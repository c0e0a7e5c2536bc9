"""PyTorch backend: weights rebuilt from the ONNX file, checked against ONNX Runtime on real frames.

The oracle is ONNX Runtime running the shipped ONNX file (independent of the module and the
weight mapping under test). CPU tests need torch (skipped without it); ``gpu`` tests need
a CUDA build of torch (and pycuda / PyNvVideoCodec for the device-memory paths).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.infer.base import BackendError

REPO = Path(__file__).resolve().parent.parent
ONNX = REPO / "model_assets" / "efficientnet_lite0_gem.onnx"
QUERY_VIDEOS = sorted((REPO / "runtime" / "demo_data" / "query").glob("*.mp4"))
CPU_COSINE = 0.9999
GPU_COSINE = 0.999

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("onnx") is None,
    reason="needs torch and onnx (the 'torch' extra)",
)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _require_torch_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        return
    if os.environ.get("FAIL_WITHOUT_CUDA") == "1":
        pytest.fail(f"FAIL_WITHOUT_CUDA=1 but torch {torch.__version__} sees no CUDA device")
    pytest.skip(f"torch {torch.__version__} sees no CUDA device")


@pytest.fixture(scope="module")
def manifest():
    from runtime.model_manifest import load_default_manifest

    return load_default_manifest()


@pytest.fixture(scope="module")
def frames(manifest) -> np.ndarray:
    """Real frames: the demo queries decoded by PyAV and preprocessed on the CPU (model input contract)."""
    from runtime.decode.pyav import PyAVDecoder
    from runtime.pipeline.extractor import preprocess_config
    from runtime.sampling import SamplingPolicy

    if not QUERY_VIDEOS:
        pytest.skip("no runtime/demo_data/query/*.mp4")
    decoder, config = PyAVDecoder(), preprocess_config(manifest)
    images = [decoder.decode(path, SamplingPolicy(fps=1.0), config).images for path in QUERY_VIDEOS[:4]]
    return np.concatenate(images)[:41]


@pytest.fixture(scope="module")
def reference(frames) -> np.ndarray:
    from runtime.infer.ort import OnnxRuntimeBackend

    with OnnxRuntimeBackend(ONNX) as ort:
        return ort.infer(frames)


@pytest.fixture(scope="module")
def cpu_backend():
    from runtime.infer.torch import TorchBackend

    with TorchBackend(ONNX, device="cpu", max_batch=16) as backend:
        yield backend


# -- packaging and arguments -----------------------------------------------------------


def test_importing_runtime_and_the_backend_does_not_import_torch() -> None:
    code = (
        "import sys, runtime, runtime.infer.torch, runtime.infer.onnx_graph, runtime.pipeline.devices, runtime.pipeline.extractor; "
        "bad = [m for m in ('torch', 'onnx', 'pycuda', 'tensorrt') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("missing", ["torch", pytest.param("onnx", marks=needs_torch)])
def test_constructing_without_a_package_names_it(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    from runtime.infer.torch import TorchBackend

    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(BackendError, match=f"'{missing}' package is not importable.*vcd-runtime\\[torch\\]"):
        TorchBackend(ONNX)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device": "tpu"}, "device must be one of"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"precision": "fp16"}, "precision 'fp16' needs device 'cuda'"),
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"max_batch": 8, "graph_batches": (1, 4)}, "graph_batches must be sizes in"),
        ({"pad_mode": "reflect"}, "pad_mode must be one of"),
        ({"num_output_slots": 0}, "num_output_slots must be >= 1"),
    ],
)
def test_bad_arguments_are_rejected_before_any_import(kwargs: dict, message: str) -> None:
    from runtime.infer.torch import TorchBackend

    with pytest.raises(ValueError, match=message):
        TorchBackend(ONNX, **kwargs)


def test_graph_buckets_cover_every_batch_size() -> None:
    from runtime.infer.torch import default_graph_batches

    assert default_graph_batches(1) == (1,)
    assert default_graph_batches(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert default_graph_batches(100) == (1, 2, 4, 8, 16, 32, 64, 100)


@needs_torch
def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    from runtime.infer.torch import TorchBackend

    with pytest.raises(BackendError, match="ONNX model not found"):
        TorchBackend(tmp_path / "absent.onnx")


# -- CPU parity with ONNX Runtime on real frames ---------------------------------------


@needs_torch
@pytest.mark.parametrize("count", [1, 2, 7, 16, 17, 41])
def test_cpu_fp32_matches_onnxruntime_on_real_frames(cpu_backend, frames, reference, count: int) -> None:
    # max_batch=16: 17 and 41 images are split into 16 + 1 and 16 + 16 + 9
    out = cpu_backend.infer(frames[:count])
    assert out.shape == (count, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cosines = _cosines(out, reference[:count])
    assert cosines.min() >= CPU_COSINE, cosines


@needs_torch
@pytest.mark.parametrize("channels_last, pad_mode", [(False, "pad"), (True, "pad"), (False, "kernel"), (True, "kernel")])
def test_every_layout_and_padding_variant_computes_the_same_function(frames, reference, channels_last: bool, pad_mode: str) -> None:
    from runtime.infer.torch import TorchBackend

    with TorchBackend(ONNX, channels_last=channels_last, pad_mode=pad_mode) as backend:
        out = backend.infer(frames[:5])
    assert _cosines(out, reference[:5]).min() >= CPU_COSINE


@needs_torch
def test_results_are_owned_by_the_caller(cpu_backend, frames) -> None:
    first = cpu_backend.infer(frames[:3])
    kept = first.copy()
    first[:] = 0
    np.testing.assert_array_equal(cpu_backend.infer(frames[:3]), kept)
    assert cpu_backend.infer(frames[:0]).shape == (0, 1280)


@needs_torch
def test_bad_images_are_rejected(cpu_backend, frames) -> None:
    with pytest.raises(ValueError, match="expected uint8 images"):
        cpu_backend.infer(frames[:2].astype(np.float32))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, 224, 224\)"):
        cpu_backend.infer(frames[:2, :, :100])


@needs_torch
def test_host_engine_submits_numpy_batches(cpu_backend, frames, reference) -> None:
    from runtime.infer.torch import TorchEngine

    engine = TorchEngine(cpu_backend)
    assert (engine.max_batch, engine.output_dim) == (16, 1280)
    buffer = np.zeros((16, 3, 224, 224), np.uint8)
    buffer[:5] = frames[:5]
    pending = engine.submit(buffer, 5, [])
    out = pending.wait()
    assert out.shape == (5, 1280) and pending.busy_seconds > 0
    assert _cosines(out, reference[:5]).min() >= CPU_COSINE
    with pytest.raises(ValueError, match=r"count must be in \[1, 16\]"):
        engine.submit(buffer, 17, [])
    with pytest.raises(BackendError, match="a CPU backend takes numpy batches"):
        engine.submit(12345, 2, [])


# -- weight mapping: a graph that differs from the module is a clear error ---------------


def _conv_nodes(model):
    return [n for n in model.graph.node if n.op_type == "Conv"]


def _set_attr(node, name, value) -> None:
    from onnx import helper

    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def _drop_bias(model) -> None:
    conv = _conv_nodes(model)[3]
    del conv.input[2]


def _missing_initializer(model) -> None:
    name = _conv_nodes(model)[5].input[1]
    kept = [i for i in model.graph.initializer if i.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _wrong_kernel(model) -> None:
    from onnx import numpy_helper

    conv = _conv_nodes(model)[4]  # block 1 depthwise, 3x3 in EfficientNet-Lite0
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(np.zeros((weight.shape[0], 1, 5, 5), np.float32), init.name))
    _set_attr(conv, "kernel_shape", [5, 5])


def _wrong_stride(model) -> None:
    _set_attr(_conv_nodes(model)[7], "strides", [2, 2])


def _wrong_pads(model) -> None:
    _set_attr(_conv_nodes(model)[0], "pads", [1, 1, 1, 1])


def _no_residual(model) -> None:
    add = next(n for n in model.graph.node if n.op_type == "Add")
    for node in model.graph.node:  # readers of the Add read the projection instead
        for i, name in enumerate(node.input):
            if name == add.output[0]:
                node.input[i] = add.input[0]
    model.graph.node.remove(add)


def _relu6_removed(model) -> None:
    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == clip.output[0]:
                node.input[i] = clip.input[0]
    model.graph.node.remove(clip)


def _relu_not_relu6(model) -> None:
    from onnx import numpy_helper

    clip = next(n for n in model.graph.node if n.op_type == "Clip")
    name = clip.input[2]
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(np.array(5.0, np.float32), name))


@needs_torch
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_drop_bias, r"conv 3 \(/_blocks\.1/_expand_conv/Conv\): bias shape is None in the graph, the module expects \(96,\)"),
        (_missing_initializer, r"conv weight \('onnx::Conv_\d+'\) is not an initializer or constant"),
        (_wrong_kernel, r"conv 4 \(/_blocks\.1/_depthwise_conv/Conv\): weight shape is \(96, 1, 5, 5\) in the graph, the module expects \(96, 1, 3, 3\)"),
        (_wrong_stride, r"conv 7 .*: stride is \(2, 2\) in the graph, the module expects \(1, 1\)"),
        (_wrong_pads, r"conv 0 \(/_conv_stem/Conv\): pads \(top, left, bottom, right\) is \(1, 1, 1, 1\) in the graph, the module expects \(0, 0, 1, 1\)"),
        (_no_residual, r"residual spans .* in the graph, the module expects \[\(6, 8\), "),
        (_relu6_removed, r"conv 0 \(/_conv_stem/Conv\): ReLU6 is False in the graph, the module expects True"),
        (_relu_not_relu6, r"activation Clip\(0\.0, 5\.0\) is not ReLU6"),
    ],
)
def test_a_graph_that_differs_from_the_module_is_a_clear_error(tmp_path: Path, corrupt, message: str) -> None:
    import onnx

    from runtime.infer.onnx_graph import ModelGraphError
    from runtime.infer.torch import TorchBackend

    model = onnx.load(str(ONNX))
    corrupt(model)
    path = tmp_path / "corrupt.onnx"
    onnx.save(model, str(path))
    backend = TorchBackend(path)
    with pytest.raises(ModelGraphError, match=message):
        backend.activate()
    assert not backend.is_active


@needs_torch
def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path: Path) -> None:
    from runtime.infer.onnx_graph import ModelGraphError
    from runtime.infer.torch import TorchBackend

    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(ModelGraphError, match="not a readable ONNX model"):
        TorchBackend(path).activate()


@needs_torch
def test_the_reader_sees_the_lite0_structure() -> None:
    from runtime.infer.onnx_graph import read_graph_weights

    weights = read_graph_weights(ONNX)
    assert weights.input_shape == (3, 224, 224) and weights.output_dim == 1280
    assert len(weights.convs) == 49 and sum(c.relu6 for c in weights.convs) == 49 - 16  # 16 projections have no ReLU6
    assert weights.mean.tolist() == [127.0] * 3 and weights.std.tolist() == [128.0] * 3
    assert weights.gem_p == 3.0 and len(weights.residuals) == 9


@needs_torch
def test_the_benchmark_runs_available_backends_and_names_why_others_are_skipped(tmp_path: Path) -> None:
    from benchmarks import infer_backends

    report = infer_backends.run(["ort", "torch-cpu", "trt"], [2], ONNX, rounds=2, min_seconds=0.01, warmup=1)
    ran = {r["backend"]: r for r in report["results"]}
    assert set(ran) >= {"ort", "torch-cpu"}
    for entry in ran.values():
        assert entry["batch_size"] == 2 and entry["images_per_second"] > 0 and len(entry["images_per_second_rounds"]) == 2
        assert entry["min_cosine_vs_ort_cpu_fp32"] >= CPU_COSINE
    if importlib.util.find_spec("tensorrt") is None:
        assert [s["backend"] for s in report["skipped"]] == ["trt"] and "'tensorrt' package is not importable" in report["skipped"][0]["reason"]
    assert infer_backends.main(["--backends", "ort", "--batch-sizes", "1", "--rounds", "1", "--min-seconds", "0.01",
                                "--no-check", "--json", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").is_file()


# -- the host pipeline end to end -------------------------------------------------------


@needs_torch
@pytest.mark.slow
def test_host_pipeline_with_torch_matches_onnxruntime(manifest) -> None:
    from runtime.decode.pyav import PyAVDecoder
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.infer.torch import TorchBackend
    from runtime.pipeline.devices import build_host_pipeline
    from runtime.pipeline.extractor import preprocess_config
    from runtime.records import VideoEmbeddings, VideoTask
    from runtime.sampling import SamplingPolicy

    tasks = [VideoTask(p.stem, p, None) for p in QUERY_VIDEOS[:3]]
    runs = {}
    for name, backend in (("ort", OnnxRuntimeBackend(ONNX)), ("torch", TorchBackend(ONNX, max_batch=8))):
        pipeline = build_host_pipeline(PyAVDecoder(), backend, SamplingPolicy(fps=1.0), preprocess_config(manifest), decode_workers=2, batch_size=8)
        runs[name] = list(pipeline.run(tasks))
    assert [r.video_id for r in runs["torch"]] == [t.video_id for t in tasks]
    for ours, ref in zip(runs["torch"], runs["ort"]):
        assert isinstance(ours, VideoEmbeddings) and isinstance(ref, VideoEmbeddings)
        np.testing.assert_array_equal(ours.intervals, ref.intervals)
        assert ours.embeddings.shape == ref.embeddings.shape and ours.embeddings.shape[0] >= 8
        assert _cosines(ours.embeddings, ref.embeddings).min() >= CPU_COSINE


# -- GPU --------------------------------------------------------------------------------


@needs_torch
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_cuda_fp16_matches_onnxruntime_fp32(frames, reference, cuda_graphs: bool) -> None:
    _require_torch_cuda()
    from runtime.infer.torch import TorchBackend

    with TorchBackend(ONNX, device="cuda", max_batch=16, cuda_graphs=cuda_graphs) as backend:
        assert backend.precision == "fp16" and bool(backend._graphs) == cuda_graphs
        for count in (1, 5, 16, 41):  # buckets 1, 8 (padded), 16, and 16 + 16 + 16 (padded)
            out = backend.infer(frames[:count])
            assert out.shape == (count, 1280) and out.dtype == np.float32
            cosines = _cosines(out, reference[:count])
            assert cosines.min() >= GPU_COSINE, (count, cosines.min())
        again = backend.infer(frames[:5])
        np.testing.assert_allclose(again, backend.infer(frames[:5]), atol=1e-6)


@needs_torch
@pytest.mark.gpu
def test_device_memory_filled_by_the_cuda_preprocessing_is_read_in_place(frames) -> None:
    """NV12 frames -> CUDA kernel into a pycuda batch buffer -> TorchEngine (no host copy), vs the CPU resizer + ORT."""
    _require_torch_cuda()
    from gpu_support import require_gpu

    require_gpu(("pycuda",))
    import av
    import pycuda.driver as cuda
    import vcd_core

    from runtime.device.cuda import CudaContext, CudaOps
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.infer.torch import TorchBackend, TorchEngine
    from runtime.preprocess.cuda import CudaPreprocessor, nv12_geometry

    planes = []
    with av.open(str(QUERY_VIDEOS[0])) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 10 == 0:
                nv12 = frame.reformat(format="nv12").to_ndarray()
                height = frame.height
                planes.append((np.ascontiguousarray(nv12[:height]), np.ascontiguousarray(nv12[height:])))
            if len(planes) == 6:
                break
    expected_input = np.concatenate(
        [vcd_core.resize_nv12(y[None], uv[None], 224, 224, interpolation="area", crop="squash") for y, uv in planes]
    )
    with OnnxRuntimeBackend(ONNX) as ort:
        reference = ort.infer(expected_input)

    context = CudaContext.get(0)
    backend = TorchBackend(ONNX, device="cuda", max_batch=8).activate()
    with context.scope():
        ops = CudaOps(context)
        engine = TorchEngine(backend, context)
        buffer = ops.allocate_batch(8, (3, 224, 224))
        stream = ops.new_stream()
        pre = CudaPreprocessor(context)
        keep = []
        for slot, (y, uv) in enumerate(planes):
            d_y, d_uv = cuda.to_device(y), cuda.to_device(uv)
            keep += [d_y, d_uv]
            geometry = nv12_geometry(y.shape[0], y.shape[1], 224, 224, "area", "squash", 0)
            pre.nv12_to_slot(int(d_y), y.shape[1], int(d_uv), uv.shape[1], geometry, ops.slot_address(buffer, slot), stream)
        event = ops.record_event(stream)
        pending = engine.submit(buffer, len(planes), [event])
        out = pending.wait()
        assert pending.busy_seconds > 0
        host = np.empty((len(planes), 3, 224, 224), np.uint8)
        cuda.memcpy_dtoh(host, buffer)
    assert np.abs(host.astype(int) - expected_input.astype(int)).max() <= 1  # the kernel matches the CPU resizer
    assert _cosines(out, reference).min() >= GPU_COSINE
    backend.deactivate()


@needs_torch
@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_pipeline_with_the_torch_engine_matches_the_cpu_pipeline(manifest) -> None:
    _require_torch_cuda()
    from gpu_support import require_gpu

    require_gpu(("pycuda", "PyNvVideoCodec"))
    from runtime.decode.pyav import PyAVDecoder
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.pipeline.devices import build_gpu_pipeline, build_host_pipeline
    from runtime.pipeline.extractor import preprocess_config
    from runtime.records import VideoEmbeddings, VideoTask
    from runtime.sampling import SamplingPolicy

    tasks = [VideoTask(p.stem, p, None) for p in QUERY_VIDEOS]
    sampling, preprocess = SamplingPolicy(fps=1.0), preprocess_config(manifest)
    gpu = list(build_gpu_pipeline(manifest, sampling, preprocess, num_workers=2, batch_size=16, engine="torch").run(tasks))
    cpu = list(build_host_pipeline(PyAVDecoder(), OnnxRuntimeBackend(ONNX), sampling, preprocess).run(tasks))
    for ours, ref in zip(gpu, cpu):
        assert isinstance(ours, VideoEmbeddings) and isinstance(ref, VideoEmbeddings), (ours, ref)
        assert ours.embeddings.shape == ref.embeddings.shape
        assert _cosines(ours.embeddings, ref.embeddings).min() >= GPU_COSINE, ours.video_id


def test_output_slots_block_until_a_slot_is_released() -> None:
    import threading
    import time

    from runtime.infer.base import OutputSlots

    slots = OutputSlots(2)
    taken = {slots.acquire(), slots.acquire()}
    assert taken == {0, 1}
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire()))
    waiter.start()
    time.sleep(0.1)
    assert got == []  # both slots in use: acquire waits
    slots.release(1)
    waiter.join(timeout=5)
    assert got == [1]
