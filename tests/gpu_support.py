"""GPU-test policy helpers: ``gpu``-marked tests skip without a usable GPU stack, unless FAIL_WITHOUT_CUDA=1.

Wire into ``tests/conftest.py`` with::

    from gpu_support import pytest_runtest_setup  # noqa: F401

or call ``require_gpu()`` at the top of a test (what the GPU tests in this directory do,
so they behave the same whether or not the hook is wired).
"""

from __future__ import annotations

import functools
import os

import pytest

FAIL_ENV = "FAIL_WITHOUT_CUDA"


@functools.cache
def gpu_stack_status(packages: tuple[str, ...] = ("pycuda", "tensorrt", "PyNvVideoCodec")) -> tuple[bool, str]:
    """(usable, reason): the packages import, a CUDA device exists and the kernels are built."""
    from runtime.device.cuda import gpu_runtime_status

    return gpu_runtime_status(packages=packages)


def require_gpu(packages: tuple[str, ...] = ("pycuda", "tensorrt", "PyNvVideoCodec")) -> None:
    """Skip the calling test without the GPU stack; fail instead when FAIL_WITHOUT_CUDA=1."""
    ok, reason = gpu_stack_status(packages)
    if ok:
        return
    if os.environ.get(FAIL_ENV) == "1":
        pytest.fail(f"{FAIL_ENV}=1 but the GPU stack is unavailable: {reason}")
    pytest.skip(f"needs an NVIDIA GPU stack: {reason}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Collection-time policy for ``@pytest.mark.gpu`` tests."""
    if item.get_closest_marker("gpu") is not None:
        require_gpu()
