"""CUDA preprocessing: NV12 device frames -> resized planar RGB uint8 in a slot of a device batch.

Note [Why a fatbin loaded by pycuda]
------------------------------------
The kernels (``cpp/cuda/preprocess_kernels.cu``) are compiled by CMake into
``runtime/preprocess/preprocess_kernels.fatbin`` (SASS for sm_70..sm_90 plus PTX; Note [Which
compiler builds the fatbin] in ``cmake/cuda.cmake``) and loaded here
with ``pycuda.driver.module_from_buffer`` into the primary context that NVDEC and TensorRT
also use (Note [One CUDA context] in ``runtime/device/cuda.py``). This keeps the pybind11
extension ``vcd_core`` CPU-only (it builds and imports on machines without CUDA), avoids
mixing a runtime-API context owned by a CUDA-linked extension with the driver-API context
of the decoder, and lets the kernels take raw device pointers and streams from any of the
three components.

The tap tables (which source pixels, with which float32 weights, make each output pixel)
are computed on the host by the same formulas as ``cpp/preprocess.cpp`` and uploaded once
per frame geometry; the kernel only accumulates. The CPU tests run these tables through the
kernel source compiled for the host (``vcd_core._cuda_kernels_on_host``) and check the result
bit-for-bit against ``vcd_core.resize_nv12`` without a GPU (Note [Bit-exact parity with the
CPU path] in the .cu file; ``tests/test_kernel_source.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from importlib import metadata
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FATBIN_NAME = "preprocess_kernels.fatbin"
KERNEL_NAMES = ("vcd_nv12_to_rgb_planar_u8", "vcd_u8_to_f32")
_BLOCK = (32, 8, 1)


class CudaPreprocessError(RuntimeError):
    """The CUDA kernels could not be found, loaded or launched."""


# ---------------------------------------------------------------------------------------
# Geometry (pure numpy; mirrors cpp/preprocess.cpp)


@dataclass(frozen=True, eq=False)
class AxisTaps:
    """Per output index j: source ``index[offsets[j]:offsets[j+1]]`` with float32 ``weight``.

    Compared and hashed by identity (numpy arrays are not hashable), so an ``Nv12Geometry``
    from the cached ``nv12_geometry`` can key the launcher's device tables.
    """

    offsets: np.ndarray  # int32 (out + 1,)
    index: np.ndarray  # int32
    weight: np.ndarray  # float32

    @property
    def size(self) -> int:
        return int(self.offsets.shape[0] - 1)


def _taps(rows: list[list[tuple[int, float]]]) -> AxisTaps:
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    index = np.array([i for r in rows for i, _ in r], dtype=np.int32)
    weight = np.array([w for r in rows for _, w in r], dtype=np.float32)
    return AxisTaps(offsets, index, weight)


def bilinear_taps(start: int, length: int, out_size: int) -> AxisTaps:
    """Half-pixel-centre bilinear taps for the source window [start, start + length)."""
    scale = length / out_size
    rows = []
    for j in range(out_size):
        source = min(max((j + 0.5) * scale - 0.5, 0.0), float(length - 1))
        i0 = int(np.floor(source))
        frac = source - i0
        row = [(start + i0, float(np.float32(1.0 - frac)))]
        if frac > 0 and i0 + 1 < length:
            row.append((start + i0 + 1, float(np.float32(frac))))
        rows.append(row)
    return _taps(rows)


def area_taps(start: int, length: int, out_size: int) -> AxisTaps:
    """Exact box-filter taps: output j covers source [j*s, (j+1)*s), s = length / out_size."""
    scale = length / out_size
    rows = []
    for j in range(out_size):
        lo = j * scale
        hi = float(length) if j + 1 == out_size else (j + 1) * scale
        first, last = int(np.floor(lo)), min(int(np.ceil(hi)), length)
        overlaps = [min(hi, float(i + 1)) - max(lo, float(i)) for i in range(first, last)]
        total = 0.0
        for overlap in overlaps:
            total += overlap
        rows.append([(start + i, overlap / total) for i, overlap in zip(range(first, last), overlaps) if overlap > 0])
    return _taps(rows)


def axis_taps(interpolation: str, start: int, length: int, out_size: int) -> AxisTaps:
    """Area taps when downscaling with ``area``, bilinear otherwise (as the CPU path)."""
    if interpolation == "area" and out_size <= length:
        return area_taps(start, length, out_size)
    return bilinear_taps(start, length, out_size)


def fold_to_chroma(luma: AxisTaps) -> AxisTaps:
    """Luma taps folded onto 4:2:0 chroma indices (i // 2), merging neighbours (float32 sums)."""
    rows = []
    for j in range(luma.size):
        row: list[tuple[int, np.float32]] = []
        for t in range(int(luma.offsets[j]), int(luma.offsets[j + 1])):
            chroma_index = int(luma.index[t]) // 2
            w = np.float32(luma.weight[t])
            if row and row[-1][0] == chroma_index:
                row[-1] = (chroma_index, np.float32(row[-1][1] + w))
            else:
                row.append((chroma_index, w))
        rows.append([(i, float(w)) for i, w in row])
    return _taps(rows)


def source_window(crop: str, height: int, width: int, out_height: int, out_width: int) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) of the source region that is resized (integer centre crop)."""
    if crop == "squash":
        return 0, 0, height, width
    if crop != "center":
        raise ValueError(f"crop must be one of ('squash', 'center'), got {crop!r}")
    if width * out_height > height * out_width:
        crop_width = min(max(int(np.floor(height * out_width / out_height + 0.5)), 1), width)
        return 0, (width - crop_width) // 2, height, crop_width
    crop_height = min(max(int(np.floor(width * out_height / out_width + 0.5)), 1), height)
    return (height - crop_height) // 2, 0, crop_height, width


@dataclass(frozen=True)
class Nv12Geometry:
    """Tap tables for one (source size, output size, options, rotation) combination.

    Attributes:
        out_height, out_width: size the kernel resamples to, before rotation.
        rotation: counter-clockwise quarter turns applied when writing (numpy.rot90).
        x, y, chroma_x, chroma_y: tap tables.
    """

    out_height: int
    out_width: int
    rotation: int
    x: AxisTaps
    y: AxisTaps
    chroma_x: AxisTaps
    chroma_y: AxisTaps

    @property
    def slot_shape(self) -> tuple[int, int, int]:
        """(3, H, W) written into the batch slot, after rotation."""
        if self.rotation % 2:
            return 3, self.out_width, self.out_height
        return 3, self.out_height, self.out_width


@lru_cache(maxsize=256)
def nv12_geometry(
    height: int, width: int, out_height: int, out_width: int, interpolation: str, crop: str, rotation_degrees: int = 0
) -> Nv12Geometry:
    """Tap tables for a frame of ``height`` x ``width`` and the model's output size.

    Args:
        height, width: source frame size (luma).
        out_height, out_width: model input size (after rotation, like the CPU decoder's).
        interpolation: ``area`` or ``bilinear``.
        crop: ``squash`` or ``center``.
        rotation_degrees: display rotation of the stream (0, 90, 180, 270); for 90/270 the
            frame is resized into the transposed size and then rotated, as the CPU path does.

    Returns:
        The geometry (cached).
    """
    if rotation_degrees not in (0, 90, 180, 270):
        raise ValueError(f"rotation_degrees must be one of (0, 90, 180, 270), got {rotation_degrees!r}")
    if interpolation not in ("area", "bilinear"):
        raise ValueError(f"interpolation must be one of ('area', 'bilinear'), got {interpolation!r}")
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if rotation_degrees in (90, 270):
        out_height, out_width = out_width, out_height
    y0, x0, window_height, window_width = source_window(crop, height, width, out_height, out_width)
    x = axis_taps(interpolation, x0, window_width, out_width)
    y = axis_taps(interpolation, y0, window_height, out_height)
    return Nv12Geometry(out_height, out_width, rotation_degrees // 90, x, y, fold_to_chroma(x), fold_to_chroma(y))


# ---------------------------------------------------------------------------------------
# Fatbin


def _installed_fatbin() -> Path | None:
    """The fatbin of the installed ``vcd-runtime`` distribution (a source checkout shadows its package dir)."""
    try:
        files = metadata.files("vcd-runtime") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == FATBIN_NAME:
            return Path(str(file.locate()))
    return None


def find_fatbin() -> Path | None:
    """Where the compiled kernels are.

    In order: ``$VCD_CUDA_FATBIN``; next to this module (an installed package); the installed
    ``vcd-runtime`` distribution (when a source checkout's ``runtime/`` is imported instead);
    a CMake build dir under the checkout's ``build/``.

    Returns:
        The first existing path, or None.
    """
    override = os.environ.get("VCD_CUDA_FATBIN")
    if override:
        return Path(override) if Path(override).is_file() else None
    here = Path(__file__).resolve().parent
    candidates = [here / FATBIN_NAME, _installed_fatbin()]
    repo = here.parent.parent
    candidates += sorted((repo / "build").glob(f"*/{FATBIN_NAME}")) + sorted((repo / "build").glob(FATBIN_NAME))
    return next((c for c in candidates if c is not None and c.is_file()), None)


def fatbin_kernel_names(path: str | Path) -> list[str]:
    """Which of ``KERNEL_NAMES`` appear in a fatbin (symbol names are stored in plain bytes)."""
    data = Path(path).read_bytes()
    return [name for name in KERNEL_NAMES if name.encode() in data]


# ---------------------------------------------------------------------------------------
# Launcher


class CudaPreprocessor:
    """Launches the preprocessing kernels on caller-provided streams.

    One instance per process (or per context) is enough: launches are thread-safe; the tap
    tables are uploaded once per geometry and kept for the instance's lifetime.

    Args:
        context: a ``runtime.device.cuda.CudaContext`` (current on the calling threads).
        fatbin: path of the compiled kernels; default ``find_fatbin()``.
    """

    def __init__(self, context: Any, fatbin: str | Path | None = None) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda
        self.context = context
        path = Path(fatbin) if fatbin is not None else find_fatbin()
        if path is None or not path.is_file():
            raise CudaPreprocessError(
                f"CUDA kernels not found (looked for {FATBIN_NAME} in runtime/preprocess/, build/*/ and $VCD_CUDA_FATBIN); "
                "build the package with nvcc available (cmake option VCD_ENABLE_CUDA=ON)"
            )
        with context.scope():
            try:
                self._module = cuda.module_from_buffer(path.read_bytes())
                self._nv12 = self._module.get_function("vcd_nv12_to_rgb_planar_u8")
                self._u8_to_f32 = self._module.get_function("vcd_u8_to_f32")
            except cuda.Error as exc:
                raise CudaPreprocessError(f"cannot load CUDA kernels from {path}: {exc}") from exc
        # pointers: y, uv, 12 tap arrays, out; ints: pitches, sizes, rotation
        self._nv12.prepare("PiPi" + "P" * 12 + "iiiP")
        self._u8_to_f32.prepare("PPq")
        self._tables: dict[Nv12Geometry, tuple[Any, list[int]]] = {}
        self._lock = threading.Lock()
        self.path = path

    def _device_tables(self, geometry: Nv12Geometry) -> list[int]:
        with self._lock:
            cached = self._tables.get(geometry)
            if cached is None:
                arrays = []
                for taps in (geometry.x, geometry.y, geometry.chroma_x, geometry.chroma_y):
                    arrays += [taps.offsets, taps.index, taps.weight]
                sizes = [a.nbytes for a in arrays]
                buffer = self._cuda.mem_alloc(max(sum(sizes), 1))
                host = np.concatenate([a.view(np.uint8) for a in arrays])
                self._cuda.memcpy_htod(buffer, host)
                pointers, at = [], int(buffer)
                for size in sizes:
                    pointers.append(at)
                    at += size
                cached = (buffer, pointers)
                self._tables[geometry] = cached
            return cached[1]

    def nv12_to_slot(
        self,
        y_ptr: int,
        y_pitch: int,
        uv_ptr: int,
        uv_pitch: int,
        geometry: Nv12Geometry,
        out_ptr: int,
        stream: Any,
    ) -> None:
        """Enqueue conversion of one NV12 frame into ``out_ptr`` (3 x H' x W' uint8) on ``stream``.

        Args:
            y_ptr, y_pitch: device luma plane and its row pitch in bytes.
            uv_ptr, uv_pitch: device interleaved chroma plane and its pitch.
            geometry: from ``nv12_geometry`` for this frame size.
            out_ptr: device address of the batch slot.
            stream: pycuda ``Stream`` to launch on (the decoder's stream keeps the frame alive).
        """
        tables = self._device_tables(geometry)
        grid = ((geometry.out_width + _BLOCK[0] - 1) // _BLOCK[0], (geometry.out_height + _BLOCK[1] - 1) // _BLOCK[1], 1)
        self._nv12.prepared_async_call(
            grid,
            _BLOCK,
            stream,
            np.uintp(y_ptr),
            np.int32(y_pitch),
            np.uintp(uv_ptr),
            np.int32(uv_pitch),
            *[np.uintp(p) for p in tables],
            np.int32(geometry.out_height),
            np.int32(geometry.out_width),
            np.int32(geometry.rotation),
            np.uintp(out_ptr),
        )

    def u8_to_f32(self, src_ptr: int, dst_ptr: int, count: int, stream: Any) -> None:
        """Enqueue uint8 -> float32 (0..255) conversion of ``count`` elements on ``stream``."""
        blocks = min((count + 255) // 256, 65535)
        self._u8_to_f32.prepared_async_call((max(blocks, 1), 1, 1), (256, 1, 1), stream, np.uintp(src_ptr), np.uintp(dst_ptr), np.int64(count))


__all__ = [
    "FATBIN_NAME",
    "KERNEL_NAMES",
    "AxisTaps",
    "CudaPreprocessError",
    "CudaPreprocessor",
    "Nv12Geometry",
    "area_taps",
    "axis_taps",
    "bilinear_taps",
    "fatbin_kernel_names",
    "find_fatbin",
    "fold_to_chroma",
    "nv12_geometry",
    "source_window",
]
