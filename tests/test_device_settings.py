"""Device choice and per-device settings: GPU readiness that tells the truth, options a device cannot honour rejected."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.device.host import ThreadBudget, usable_cores
from runtime.pipeline.extractor import ExtractorConfig, choose_device


def _config(*argv: str) -> ExtractorConfig:
    parser = argparse.ArgumentParser()
    ExtractorConfig.add_arguments(parser)
    return ExtractorConfig.from_args(parser.parse_args(list(argv)))


def test_defaults_per_device() -> None:
    cpu, gpu = _config().resolve("cpu"), _config().resolve("gpu")
    # the shipped model directory has the int8 model (model_assets/manifest_int8.json): the CPU default
    assert (cpu.engine, cpu.precision, cpu.decode_workers, cpu.batch_size) == ("ort", "int8", 1, 32)
    assert (gpu.engine, gpu.precision, gpu.decode_workers, gpu.batch_size) == ("trt", "fp16", 7, 256)


def test_auto_precision_on_the_cpu_falls_back_to_fp32(tmp_path) -> None:
    import shutil

    from runtime.model_manifest import default_model_dir

    assert (default_model_dir() / "manifest_int8.json").is_file()
    assert _config("--engine", "torch").resolve("cpu").precision == "fp32"  # PyTorch runs the fp32 graph only
    for name in ("manifest.json", "efficientnet_lite0_gem.onnx"):
        shutil.copy(default_model_dir() / name, tmp_path / name)
    assert _config("--model-dir", str(tmp_path)).resolve("cpu").precision == "fp32"  # no int8 model there
    assert _config("--precision", "fp32").resolve("cpu").precision == "fp32"


def test_int8_and_decode_mode_on_the_cpu() -> None:
    config = _config("--precision", "int8", "--decode-mode", "nonref")
    assert config.resolve("cpu").precision == "int8" and config.decode_mode == "nonref"
    assert _config().decode_mode == "auto"


def test_gpu_settings_are_honoured() -> None:
    s = _config("--decode-sessions", "12", "--batch-size", "128", "--engine", "torch", "--precision", "fp32").resolve("gpu")
    assert (s.engine, s.precision, s.decode_workers, s.batch_size) == ("torch", "fp32", 12, 128)
    assert _config("--engine-cache-dir", "/tmp/x").engine_cache_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    "argv, device, message",
    [
        (["--engine", "trt"], "cpu", "--engine trt does not run on the cpu path"),
        (["--engine", "ort"], "gpu", "--engine ort does not run on the gpu path"),
        (["--precision", "fp16"], "cpu", "--precision fp16 is not available on the cpu path"),
        (["--precision", "int8"], "gpu", "--precision int8 is not available on the gpu path"),
        (["--engine-cache-dir", "/tmp/e"], "cpu", "--engine-cache-dir applies to the TensorRT engine only"),
        (["--engine", "torch", "--engine-cache-dir", "/tmp/e"], "gpu", "--engine-cache-dir applies to the TensorRT engine only"),
        (["--threads", "4"], "gpu", "--threads sets CPU inference threads"),
        (["--cuda-device", "1"], "cpu", "--cuda-device 1 needs the GPU path"),
        (["--decode-workers", "0"], "cpu", "must be >= 1"),
    ],
)
def test_options_a_device_cannot_honour_are_rejected(argv: list[str], device: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(*argv).resolve(device)


def _fake_gpu_packages(root: Path, *, driver_version: int = 13000, devices: int = 1, broken: str | None = None) -> None:
    """Importable stand-ins for pycuda / PyNvVideoCodec / tensorrt on the import path (no GPU needed)."""
    (root / "pycuda").mkdir()
    (root / "pycuda" / "__init__.py").write_text("")
    (root / "pycuda" / "driver.py").write_text(textwrap.dedent(f"""
        def init():
            pass
        def get_driver_version():
            return {driver_version}
        class Device:
            @staticmethod
            def count():
                return {devices}
            def __init__(self, index):
                self.index = index
            def name(self):
                return "Fake GPU"
    """))
    for name in ("PyNvVideoCodec", "tensorrt"):
        body = "raise ImportError('libnvcuvid.so.1: cannot open shared object file')" if name == broken else ""
        (root / f"{name}.py").write_text(body + "\n")


_FAKE_MODULES = ("pycuda", "pycuda.driver", "PyNvVideoCodec", "tensorrt")


@pytest.fixture
def fake_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    saved = {name: sys.modules[name] for name in _FAKE_MODULES if name in sys.modules}

    def install(**kwargs) -> None:
        _fake_gpu_packages(tmp_path, **kwargs)
        monkeypatch.syspath_prepend(str(tmp_path))
        for name in _FAKE_MODULES:
            sys.modules.pop(name, None)

    yield install
    # the stand-ins imported during the test must not leak into later tests
    for name in _FAKE_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def test_gpu_status_imports_packages_for_real(fake_gpu) -> None:
    from runtime.device.cuda import gpu_runtime_status

    fake_gpu(broken="PyNvVideoCodec")
    ok, reason = gpu_runtime_status()
    assert not ok and "PyNvVideoCodec is installed but does not import" in reason and "libnvcuvid" in reason


def test_gpu_status_checks_the_driver_version(fake_gpu) -> None:
    from runtime.device.cuda import gpu_runtime_status

    fake_gpu(driver_version=11040)
    ok, reason = gpu_runtime_status()
    assert not ok and "supports CUDA 11.4" in reason and "needs 12.0 or newer" in reason


def test_gpu_status_checks_the_device(fake_gpu) -> None:
    from runtime.device.cuda import gpu_runtime_status

    fake_gpu(devices=0)
    ok, reason = gpu_runtime_status()
    assert not ok and "no CUDA device 0 (found 0)" in reason


def test_auto_falls_back_to_the_cpu_and_gpu_fails_with_the_reason(fake_gpu) -> None:
    fake_gpu(driver_version=11040)
    assert choose_device(_config("--device", "auto")) == "cpu"
    with pytest.raises(ValueError, match="--device gpu requested but the GPU is unavailable: .*supports CUDA 11.4"):
        choose_device(_config("--device", "gpu"))
    assert choose_device(_config("--device", "cpu")) == "cpu"


def test_thread_budget_shares_the_usable_cores() -> None:
    budget = ThreadBudget.plan(decode_workers=1, cores=8)
    assert (budget.decoder_threads, budget.resize_threads, budget.inference_threads) == (1, 1, 8)
    assert ThreadBudget.plan(decode_workers=3, cores=2).inference_threads == 2
    assert ThreadBudget.plan(decode_workers=1, inference_threads=5, cores=2).inference_threads == 5
    with pytest.raises(ValueError, match="decode_workers must be >= 1"):
        ThreadBudget.plan(decode_workers=0)


def test_usable_cores_follows_the_cpu_affinity() -> None:
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity here")
    assert usable_cores() == len(os.sched_getaffinity(0))
    original = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(original)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, original)
