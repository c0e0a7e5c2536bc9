"""Shared fixtures and the GPU-test policy (``gpu`` marker)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without a usable GPU runtime; FAIL_WITHOUT_CUDA=1 makes that a failure.

    The hook checks the stack every GPU test needs (a device, the driver, pycuda, PyNvVideoCodec,
    the kernels); each test asks for its engine's packages itself (``gpu_support.require_gpu``),
    and TensorRT tests carry the ``tensorrt`` marker, so a host without TensorRT runs
    ``-m "gpu and not tensorrt"``.
    """
    if not any("gpu" in item.keywords for item in items):
        return
    try:
        from runtime.device.cuda import gpu_runtime_status

        ok, reason = gpu_runtime_status(packages=("pycuda", "PyNvVideoCodec"))
    except Exception as exc:  # noqa: BLE001 - report any import problem as the reason
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    if ok:
        return
    if os.environ.get("FAIL_WITHOUT_CUDA") == "1":
        raise pytest.UsageError(f"FAIL_WITHOUT_CUDA=1 but the GPU runtime is unavailable: {reason}")
    skip = pytest.mark.skip(reason=f"needs the GPU runtime: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
