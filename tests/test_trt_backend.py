"""TensorRT backend: lazy imports and argument checks on the CPU; engine build, cache and parity on a GPU."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gpu_support import require_gpu

from runtime.infer.base import BackendError

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "model_assets" / "manifest.json"


def test_importing_runtime_and_the_module_needs_no_gpu_packages() -> None:
    code = (
        "import sys, runtime, runtime.infer.trt, runtime.device.cuda, runtime.pipeline.scheduler, runtime.preprocess.cuda, runtime.bench; "
        "bad = [m for m in ('tensorrt', 'pycuda', 'pycuda.driver', 'PyNvVideoCodec') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("missing", ["tensorrt", "pycuda"])
def test_constructing_without_a_package_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    if missing == "pycuda":
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
        monkeypatch.setitem(sys.modules, "tensorrt", importlib.import_module("types").ModuleType("tensorrt"))
    trt = importlib.import_module("runtime.infer.trt")
    with pytest.raises(BackendError, match=f"'{missing}' package is not importable"):
        trt.TensorRTBackend(tmp_path / "model.onnx")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int8"}, "precision must be one of"),
        ({"input_dtype": "half"}, "input_dtype must be one of"),
        ({"opt_batch": 300, "max_batch": 256}, "opt_batch <= max_batch"),
        ({"num_output_slots": 0}, "num_output_slots must be >= 1"),
    ],
)
def test_bad_arguments_are_rejected_before_any_import(kwargs: dict, message: str) -> None:
    from runtime.infer.trt import TensorRTBackend

    with pytest.raises(ValueError, match=message):
        TensorRTBackend("model.onnx", **kwargs)


def test_engine_cache_key_covers_every_build_field() -> None:
    from runtime.infer.trt import engine_cache_key

    fields = {"tensorrt": "8.5.3.1", "gpu": "H100", "compute_capability": [9, 0], "precision": "fp16", "profile": [1, 128, 256]}
    base = engine_cache_key(b"onnx", fields)
    assert base == engine_cache_key(b"onnx", dict(reversed(list(fields.items()))))
    assert base != engine_cache_key(b"onnx2", fields)
    for key, value in [("tensorrt", "10.0"), ("gpu", "A100"), ("compute_capability", [8, 0]), ("precision", "fp32"), ("profile", [1, 64, 128])]:
        assert engine_cache_key(b"onnx", {**fields, key: value}) != base, key


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.slow
def test_fp16_engine_matches_onnxruntime_and_is_cached(tmp_path: Path) -> None:
    require_gpu(("pycuda", "tensorrt"))
    if not MANIFEST.is_file():
        pytest.skip("no model_assets/manifest.json")
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.infer.trt import TensorRTBackend
    from runtime.model_manifest import ModelManifest

    manifest = ModelManifest.load(MANIFEST)
    images = np.random.default_rng(0).integers(0, 256, (37, 3, manifest.input.height, manifest.input.width), dtype=np.uint8)
    with OnnxRuntimeBackend(manifest.onnx_path) as ort:
        reference = ort.infer(images)
    with TensorRTBackend(manifest.onnx_path, max_batch=64, opt_batch=32, cache_dir=tmp_path) as trt:
        got = trt.infer(images)
        engine_path = trt.engine_path
    assert engine_path is not None and engine_path.is_file() and engine_path.with_suffix(".json").is_file()
    cosine = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.999, cosine.min()
    with TensorRTBackend(manifest.onnx_path, max_batch=64, opt_batch=32, cache_dir=tmp_path) as trt:
        assert trt.build_seconds is None  # loaded from the cache
        np.testing.assert_allclose(trt.infer(images), got, rtol=0, atol=1e-6)


def test_timing_cache_is_keyed_by_tensorrt_version_and_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import types

    trt_module = importlib.import_module("runtime.infer.trt")
    fake_trt = types.ModuleType("tensorrt")
    fake_trt.__version__ = "8.5.3.1"
    monkeypatch.setattr(trt_module, "_import_gpu_modules", lambda: (fake_trt, object()))
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    backend = trt_module.TensorRTBackend(tmp_path / "model.onnx", cache_dir=tmp_path)
    h200 = types.SimpleNamespace(name="NVIDIA H200", compute_capability=(9, 0))
    v100 = types.SimpleNamespace(name="Tesla V100-SXM2-16GB", compute_capability=(7, 0))
    paths = {backend._timing_cache_path(h200), backend._timing_cache_path(v100)}
    assert len(paths) == 2
    assert all(p.parent == tmp_path and "8.5.3.1" in p.name and " " not in p.name for p in paths)
    assert backend._timing_cache_path(h200).name.endswith("sm90.cache")
    assert trt_module.TensorRTBackend(tmp_path / "model.onnx", cache_dir=tmp_path, timing_cache=False)._timing_cache_path(h200) is None


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.slow
def test_timing_cache_of_another_gpu_is_replaced_not_fatal(tmp_path: Path) -> None:
    require_gpu(("pycuda", "tensorrt"))
    from runtime.device.cuda import CudaContext
    from runtime.infer.trt import TensorRTBackend
    from runtime.model_manifest import ModelManifest

    manifest = ModelManifest.load(MANIFEST)
    backend = TensorRTBackend(manifest.onnx_path, max_batch=8, opt_batch=4, cache_dir=tmp_path)
    timing = backend._timing_cache_path(CudaContext.get(0))
    timing.write_bytes(b"not a timing cache")
    with backend:
        assert backend.build_seconds is not None
    assert timing.stat().st_size > 100  # rewritten by the real builder
