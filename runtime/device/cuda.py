"""CUDA device support for the GPU path: readiness checks, the shared primary context, device batches and events.

Everything CUDA is imported lazily: importing this package (or ``runtime``) never needs
pycuda, TensorRT or PyNvVideoCodec. ``missing_gpu_packages()`` says what is absent.

Note [One CUDA context]
-----------------------
NVDEC (PyNvVideoCodec), the preprocessing kernels (pycuda) and TensorRT all run in the
device's *primary* context, retained once per process by ``CudaContext``. Worker threads
make it current with ``CudaContext.scope()`` (contexts are per-thread state in the driver
API). One context means device pointers, streams and events can be shared freely between
the decoder, the kernels and the engine, and the runtime API that TensorRT uses internally
binds to the same primary context.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

GPU_PACKAGES = {"pycuda": "pycuda", "tensorrt": "tensorrt", "PyNvVideoCodec": "pynvvideocodec"}


# PyNvVideoCodec 2.x and the project's pycuda builds target CUDA 12+: older drivers cannot run them.
MIN_DRIVER_CUDA_VERSION = 12000


def missing_gpu_packages(names: tuple[str, ...] = ("pycuda", "tensorrt", "PyNvVideoCodec")) -> list[str]:
    """Import names (of ``names``) that cannot be found in this environment."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def _format_cuda_version(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def gpu_runtime_status(device: int = 0, packages: tuple[str, ...] = ("pycuda", "tensorrt", "PyNvVideoCodec")) -> tuple[bool, str]:
    """Whether the GPU path (NVDEC + CUDA kernels + an engine) can run here, and why not.

    Imports each package for real (a package that is present but broken, e.g. a missing shared
    library, counts as unavailable), checks the driver's CUDA version and the device, and loads
    the kernel fatbin into the device's primary context, so that a GPU run that starts does not
    fail later inside worker threads.

    Args:
        device: CUDA device ordinal.
        packages: import names the chosen engine needs (pycuda and PyNvVideoCodec always).

    Returns:
        (True, description) or (False, reason).
    """
    missing = missing_gpu_packages(packages)
    if missing:
        return False, f"missing Python packages {missing} (install vcd-runtime[gpu])"
    for name in packages:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable"
            return False, f"{name} is installed but does not import: {type(exc).__name__}: {exc}"
    try:
        import pycuda.driver as cuda

        cuda.init()
        driver_version = int(cuda.get_driver_version())
        count = cuda.Device.count()
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types
        return False, f"CUDA driver unusable: {type(exc).__name__}: {exc}"
    if driver_version < MIN_DRIVER_CUDA_VERSION:
        return False, (f"the NVIDIA driver supports CUDA {_format_cuda_version(driver_version)}, "
                       f"the GPU path needs {_format_cuda_version(MIN_DRIVER_CUDA_VERSION)} or newer")
    if count <= device:
        return False, f"no CUDA device {device} (found {count})"
    from runtime.preprocess.cuda import FATBIN_NAME, find_fatbin

    fatbin = find_fatbin()
    if fatbin is None:
        return False, f"CUDA kernels ({FATBIN_NAME}) not built; rebuild with nvcc available"
    try:
        with CudaContext.get(device).scope():
            cuda.module_from_file(str(fatbin))
    except Exception as exc:  # noqa: BLE001 - e.g. no kernel image for this GPU's architecture
        return False, f"CUDA kernels {fatbin} do not load on device {device}: {type(exc).__name__}: {exc}"
    name = cuda.Device(device).name()
    return True, f"{name} (driver CUDA {_format_cuda_version(driver_version)}) with kernels {fatbin}"


class CudaContext:
    """The primary CUDA context of one device, shared by every GPU component of a process.

    Args:
        device: CUDA device ordinal.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _instances: ClassVar[dict[int, CudaContext]] = {}

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as cuda

        cuda.init()
        if not 0 <= device < cuda.Device.count():
            raise ValueError(f"CUDA device {device} does not exist; devices: 0..{cuda.Device.count() - 1}")
        self.device_index = device
        self.device = cuda.Device(device)
        self.context = self.device.retain_primary_context()

    @classmethod
    def get(cls, device: int = 0) -> CudaContext:
        """The process-wide instance for ``device`` (created on first use)."""
        with cls._lock:
            if device not in cls._instances:
                cls._instances[device] = cls(device)
            return cls._instances[device]

    @property
    def handle(self) -> int:
        """CUcontext as an integer (what PyNvVideoCodec's ``cudacontext`` takes)."""
        return int(self.context.handle)

    @property
    def name(self) -> str:
        return str(self.device.name())

    @property
    def compute_capability(self) -> tuple[int, int]:
        major, minor = self.device.compute_capability()
        return int(major), int(minor)

    @contextmanager
    def scope(self) -> Iterator[Any]:
        """Make the context current on this thread for the duration of the block."""
        self.context.push()
        try:
            yield self.context
        finally:
            import pycuda.driver as cuda

            cuda.Context.pop()


__all__ = ["GPU_PACKAGES", "CudaContext", "gpu_runtime_status", "missing_gpu_packages"]


class CudaOps:
    """Batches in device memory (pycuda), CUDA events, uploads on the worker's stream.

    Args:
        context: a ``runtime.device.cuda.CudaContext``; every pipeline thread enters its scope.
    """

    def __init__(self, context: Any) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda
        self.context = context
        self._slot_bytes = 0

    def allocate_batch(self, capacity: int, image_shape: tuple[int, int, int]) -> Any:
        self._slot_bytes = int(np.prod(image_shape))
        return self._cuda.mem_alloc(capacity * self._slot_bytes)

    def slot_address(self, buffer: Any, slot: int) -> int:
        return int(buffer) + slot * self._slot_bytes

    def new_stream(self) -> Any:
        return self._cuda.Stream()

    def record_event(self, stream: Any) -> Any:
        event = self._cuda.Event(self._cuda.event_flags.DISABLE_TIMING)
        event.record(stream)
        return event

    def upload(self, image: np.ndarray, buffer: Any, slot: int, stream: Any) -> None:
        # pageable source: the driver stages it before returning, so `image` may be freed
        self._cuda.memcpy_htod_async(self.slot_address(buffer, slot), np.ascontiguousarray(image), stream)

    def thread_scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.context.scope()
