"""CPU frame preprocessing: decoded frames -> resized planar RGB batches for the model.

Thin typed wrappers over the C++ core (``vcd_core.resize_*``; see Notes [Resampling] and
[YUV conversion] in ``cpp/preprocess.h``). The GIL is released while the core runs, so
decoding threads keep going meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from runtime._native import vcd_core

Interpolation = Literal["bilinear", "area"]
CropMode = Literal["squash", "center"]
OutputDtype = Literal["uint8", "float32"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Output size and resampling options.

    Attributes:
        height, width: output size in pixels (>= 1).
        interpolation: ``area`` (exact box filter, bilinear on upscaled axes) or
            ``bilinear`` (half-pixel centres, no antialiasing).
        crop: ``squash`` resizes the whole frame; ``center`` takes the centred window with
            the output's aspect ratio first.
        dtype: ``uint8`` (rounded) or ``float32`` (0..255, unrounded).
        num_threads: worker threads, 0 = all cores (results do not depend on it).
    """

    height: int = 224
    width: int = 224
    interpolation: Interpolation = "area"
    crop: CropMode = "squash"
    dtype: OutputDtype = "uint8"
    num_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ValueError(f"num_threads must be an int >= 0 (0 = all cores), got {self.num_threads!r}")
        for name, literal in (("interpolation", Interpolation), ("crop", CropMode), ("dtype", OutputDtype)):
            allowed = get_args(literal)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def _kwargs(self) -> dict[str, object]:
        return {
            "out_height": self.height,
            "out_width": self.width,
            "interpolation": self.interpolation,
            "crop": self.crop,
            "out_dtype": self.dtype,
            "num_threads": self.num_threads,
        }


def _as_batch(plane: np.ndarray, name: str, single_ndim: int) -> np.ndarray:
    array = np.asarray(plane)
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {array.dtype}")
    if array.ndim == single_ndim:
        return array[np.newaxis]
    if array.ndim != single_ndim + 1:
        raise ValueError(
            f"{name} must have {single_ndim} (one frame) or {single_ndim + 1} (batch) dimensions, "
            f"got shape {array.shape}"
        )
    return array


def preprocess_rgb(frames: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Resize RGB frames to the model's input layout.

    Args:
        frames: (N, H, W, 3) or a single (H, W, 3) uint8 RGB frame.
        config: output size and options.

    Returns:
        (N, 3, height, width) array of ``config.dtype`` (N = 1 for a single frame).
    """
    return vcd_core.resize_rgb(_as_batch(frames, "frames", 3), **config._kwargs())


def preprocess_nv12(y: np.ndarray, uv: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Convert NV12 frames (BT.601 limited range) to resized planar RGB.

    Args:
        y: (N, H, W) or (H, W) uint8 luma.
        uv: (N, ceil(H/2), 2*ceil(W/2)) or (ceil(H/2), 2*ceil(W/2)) interleaved U, V.
        config: output size and options.

    Returns:
        (N, 3, height, width) array of ``config.dtype``.
    """
    return vcd_core.resize_nv12(_as_batch(y, "y", 2), _as_batch(uv, "uv", 2), **config._kwargs())


def preprocess_yuv420p(y: np.ndarray, u: np.ndarray, v: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Convert planar YUV 4:2:0 frames (BT.601 limited range) to resized planar RGB.

    Args:
        y: (N, H, W) or (H, W) uint8 luma.
        u, v: (N, ceil(H/2), ceil(W/2)) or (ceil(H/2), ceil(W/2)) uint8 chroma planes.
        config: output size and options.

    Returns:
        (N, 3, height, width) array of ``config.dtype``.
    """
    return vcd_core.resize_yuv420p(
        _as_batch(y, "y", 2), _as_batch(u, "u", 2), _as_batch(v, "v", 2), **config._kwargs()
    )
