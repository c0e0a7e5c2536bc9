"""CPU frame preprocessing: decoded frames -> resized planar RGB batches for the model.

Thin typed wrappers over the C++ core (``vcd_core.resize_*``; see Notes [Resampling] and
[YUV conversion] in ``cpp/preprocess.h``). The GIL is released while the core runs, so
decoding threads keep going meanwhile.
"""

from __future__ import annotations

import numpy as np

from runtime._native import vcd_core
from runtime.preprocess.config import PreprocessConfig


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
