"""Test oracle: a numpy model of the CUDA kernel's arithmetic (not used by production code).

It applies the tap tables of ``runtime.preprocess.cuda.nv12_geometry`` in the float32
operation order documented in Note [Deterministic resampling] (cpp/preprocess.h): per
output pixel, the sum over x taps of w_x * (the sum over y taps of w_y * src), each sum
from 0, then BT.601 and uint8(clamp + 0.5). It checks the Python tap tables and the
documented order without running either the .cu file or the C++ resizer.
"""

from __future__ import annotations

import numpy as np

from runtime.preprocess.cuda import AxisTaps, Nv12Geometry


def dense_taps(taps: AxisTaps) -> tuple[np.ndarray, np.ndarray]:
    """(out, max_taps) index and weight arrays, padded with weight 0 at the first tap's index."""
    counts = np.diff(taps.offsets)
    width = int(counts.max()) if counts.size else 0
    index = np.zeros((taps.size, width), dtype=np.int64)
    weight = np.zeros((taps.size, width), dtype=np.float32)
    for j in range(taps.size):
        lo, hi = int(taps.offsets[j]), int(taps.offsets[j + 1])
        index[j, : hi - lo] = taps.index[lo:hi]
        index[j, hi - lo :] = taps.index[lo]
        weight[j, : hi - lo] = taps.weight[lo:hi]
    return index, weight


def _resample(plane: np.ndarray, x: AxisTaps, y: AxisTaps) -> np.ndarray:
    x_index, x_weight = dense_taps(x)
    y_index, y_weight = dense_taps(y)
    source = plane.astype(np.float32)
    # Vertical pass: columns[j_out_y, column] = sum over y taps, in order, from 0. A padded
    # tap adds w * src with w = 0, which leaves every finite float32 sum unchanged.
    columns = np.zeros((y.size, source.shape[1]), dtype=np.float32)
    for t in range(y_index.shape[1]):
        columns = columns + y_weight[:, t, None] * source[y_index[:, t]]
    out = np.zeros((y.size, x.size), dtype=np.float32)
    for t in range(x_index.shape[1]):
        out = out + x_weight[:, t] * columns[:, x_index[:, t]]
    return out


def resize_nv12_model(y_plane: np.ndarray, uv_plane: np.ndarray, geometry: Nv12Geometry) -> np.ndarray:
    """(3, H', W') uint8 planar RGB (rotated like the slot) from one NV12 frame.

    Args:
        y_plane: (H, W) uint8 luma.
        uv_plane: (ceil(H/2), 2*ceil(W/2)) uint8 interleaved U, V.
        geometry: from ``nv12_geometry``.
    """
    f32 = np.float32
    luma = _resample(y_plane, geometry.x, geometry.y)
    u = _resample(uv_plane[:, 0::2], geometry.chroma_x, geometry.chroma_y)
    v = _resample(uv_plane[:, 1::2], geometry.chroma_x, geometry.chroma_y)
    luma_term = f32(1.164383) * (luma - f32(16.0))
    cb = u - f32(128.0)
    cr = v - f32(128.0)
    rgb = np.stack(
        [
            luma_term + f32(1.596027) * cr,
            luma_term - f32(0.391762) * cb - f32(0.812968) * cr,
            luma_term + f32(2.017232) * cb,
        ]
    )
    out = (np.clip(rgb, f32(0.0), f32(255.0)) + f32(0.5)).astype(np.uint8)
    return np.ascontiguousarray(np.rot90(out, k=geometry.rotation, axes=(1, 2)))
