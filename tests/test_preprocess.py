"""CPU preprocessing: C++ resize/convert vs numpy references, Pillow and FFmpeg (PyAV).

Tolerances (uint8 output unless stated):
  * vs the float64 numpy reference of the same filter: float32 output within 1e-3, uint8
    within 1 level (rounding of values that land near .5 after float32 accumulation);
  * vs Pillow BOX (integer downscale factors) and Pillow BILINEAR (upscaling): within 1;
  * YUV vs numpy convert-then-resize on in-gamut content: float32 within 1e-2; for random
    (partly out-of-gamut) YUV at the source size, where no resampling happens, within 1;
  * YUV vs FFmpeg's own yuv420p -> rgb24 (PyAV): within 3 (swscale's fixed-point path is
    biased by about -1 level against the exact BT.601 formula).
"""

from __future__ import annotations

import math
import re

import av
import numpy as np
import pytest
import vcd_core
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.cpu import preprocess_nv12, preprocess_rgb, preprocess_yuv420p

# --- numpy references --------------------------------------------------------------------


def area_matrix(length: int, out_size: int) -> np.ndarray:
    """(out, in) weights of the exact box filter: overlap of [j*s, (j+1)*s) with pixel i."""
    scale = length / out_size
    lo = np.arange(out_size)[:, None] * scale
    hi = lo + scale
    pixel = np.arange(length)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def bilinear_matrix(length: int, out_size: int) -> np.ndarray:
    """(out, in) weights of half-pixel bilinear interpolation, edges clamped."""
    source = np.clip((np.arange(out_size) + 0.5) * length / out_size - 0.5, 0, length - 1)
    i0 = np.floor(source).astype(int)
    frac = source - i0
    weights = np.zeros((out_size, length))
    np.add.at(weights, (np.arange(out_size), i0), 1 - frac)
    np.add.at(weights, (np.arange(out_size), np.minimum(i0 + 1, length - 1)), frac)
    return weights


def axis_matrix(interpolation: str, length: int, out_size: int) -> np.ndarray:
    if interpolation == "area" and out_size <= length:
        return area_matrix(length, out_size)
    return bilinear_matrix(length, out_size)


def center_window(height: int, width: int, out_h: int, out_w: int) -> tuple[slice, slice]:
    if width * out_h > height * out_w:
        crop_w = min(max(math.floor(height * out_w / out_h + 0.5), 1), width)
        x0 = (width - crop_w) // 2
        return slice(0, height), slice(x0, x0 + crop_w)
    crop_h = min(max(math.floor(width * out_h / out_w + 0.5), 1), height)
    y0 = (height - crop_h) // 2
    return slice(y0, y0 + crop_h), slice(0, width)


def reference_resize(image: np.ndarray, out_h: int, out_w: int, interpolation: str, crop: str) -> np.ndarray:
    """(H, W, C) float image -> (C, out_h, out_w) float64."""
    if crop == "center":
        image = image[center_window(image.shape[0], image.shape[1], out_h, out_w)]
    rows = axis_matrix(interpolation, image.shape[0], out_h)
    cols = axis_matrix(interpolation, image.shape[1], out_w)
    return np.einsum("yi,ijc,xj->cyx", rows, image.astype(np.float64), cols)


def reference_yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BT.601 limited range, nearest chroma upsampling, clipped float (H, W, 3)."""
    height, width = y.shape
    u_full = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)[:height, :width].astype(np.float64) - 128
    v_full = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)[:height, :width].astype(np.float64) - 128
    luma = 1.164383 * (y.astype(np.float64) - 16)
    rgb = np.stack(
        [luma + 1.596027 * v_full, luma - 0.391762 * u_full - 0.812968 * v_full, luma + 2.017232 * u_full], axis=-1
    )
    return np.clip(rgb, 0, 255)


def rgb_to_yuv420p(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse BT.601 limited range; chroma = mean of each 2x2 block (edge blocks padded)."""
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    y = 16 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    height, width = y.shape
    pad = ((0, height % 2), (0, width % 2))

    def half(plane: np.ndarray) -> np.ndarray:
        plane = np.pad(plane, pad, mode="edge")
        return plane.reshape(plane.shape[0] // 2, 2, plane.shape[1] // 2, 2).mean(axis=(1, 3))

    to_u8 = lambda plane: np.clip(np.round(plane), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(y), to_u8(half(u)), to_u8(half(v))


def smooth_rgb(rng: np.random.Generator, height: int, width: int, noise: float = 6.0) -> np.ndarray:
    """A natural-ish image: low-frequency colour field plus mild noise, well inside gamut."""
    coarse = rng.uniform(40, 215, size=(3, 3, 3))
    rows = bilinear_matrix(3, height)
    cols = bilinear_matrix(3, width)
    field = np.einsum("yi,ijc,xj->yxc", rows, coarse, cols)
    return np.clip(field + rng.normal(0, noise, size=field.shape), 0, 255).round().astype(np.uint8)


def interleave_uv(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    uv = np.empty(u.shape[:-1] + (2 * u.shape[-1],), dtype=np.uint8)
    uv[..., 0::2] = u
    uv[..., 1::2] = v
    return uv


# --- RGB vs the numpy reference ----------------------------------------------------------

sizes = st.integers(1, 37)
interpolations = st.sampled_from(["area", "bilinear"])
crops = st.sampled_from(["squash", "center"])


@settings(max_examples=120, deadline=None)
@given(
    height=sizes, width=sizes, out_h=sizes, out_w=sizes, interpolation=interpolations, crop=crops,
    seed=st.integers(0, 2**32 - 1),
)
def test_resize_rgb_matches_numpy_reference(height, width, out_h, out_w, interpolation, crop, seed):
    frames = np.random.default_rng(seed).integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
    expected = np.stack([reference_resize(f, out_h, out_w, interpolation, crop) for f in frames])
    as_float = vcd_core.resize_rgb(frames, out_h, out_w, interpolation, crop, "float32", 1)
    assert as_float.dtype == np.float32 and as_float.shape == (2, 3, out_h, out_w)
    np.testing.assert_allclose(as_float, expected, rtol=0, atol=1e-3)
    as_uint8 = vcd_core.resize_rgb(frames, out_h, out_w, interpolation, crop, "uint8", 1)
    assert as_uint8.dtype == np.uint8
    assert np.abs(as_uint8.astype(np.int64) - np.round(expected)).max() <= 1
    # uint8 is exactly the float32 result rounded half up.
    np.testing.assert_array_equal(as_uint8, np.floor(as_float + np.float32(0.5)).astype(np.uint8))


def test_same_size_area_and_bilinear_are_identity():
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 17, 23, 3), dtype=np.uint8)
    for interpolation in ("area", "bilinear"):
        out = vcd_core.resize_rgb(frames, 17, 23, interpolation)
        np.testing.assert_array_equal(out, frames.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(("height", "width", "factor_h", "factor_w"), [(96, 120, 2, 2), (90, 120, 3, 4), (63, 35, 7, 5)])
def test_area_matches_pillow_box_for_integer_factors(height, width, factor_h, factor_w):
    frame = np.random.default_rng(2).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out_h, out_w = height // factor_h, width // factor_w
    expected = np.asarray(Image.fromarray(frame).resize((out_w, out_h), Image.Resampling.BOX))
    ours = vcd_core.resize_rgb(frame[None], out_h, out_w, "area")[0].transpose(1, 2, 0)
    assert np.abs(ours.astype(np.int64) - expected).max() <= 1


def test_area_matches_pillow_box_on_smooth_image_non_integer_factor():
    # Pillow BOX weights whole pixels by whether their centre is inside the box, the exact
    # box filter by coverage; they differ on pixel noise but agree on smooth content.
    frame = smooth_rgb(np.random.default_rng(3), 360, 640, noise=0.0)
    expected = np.asarray(Image.fromarray(frame).resize((224, 224), Image.Resampling.BOX))
    ours = vcd_core.resize_rgb(frame[None], 224, 224, "area")[0].transpose(1, 2, 0)
    assert np.abs(ours.astype(np.int64) - expected).max() <= 1


def test_bilinear_upscale_matches_pillow_bilinear():
    frame = np.random.default_rng(4).integers(0, 256, size=(23, 31, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(frame).resize((100, 57), Image.Resampling.BILINEAR))
    for interpolation in ("bilinear", "area"):  # area upscales bilinearly
        ours = vcd_core.resize_rgb(frame[None], 57, 100, interpolation)[0].transpose(1, 2, 0)
        assert np.abs(ours.astype(np.int64) - expected).max() <= 1


def test_center_crop_takes_the_centred_window():
    frames = np.random.default_rng(5).integers(0, 256, size=(2, 100, 200, 3), dtype=np.uint8)
    ours = vcd_core.resize_rgb(frames, 50, 50, crop="center")
    np.testing.assert_array_equal(ours, vcd_core.resize_rgb(np.ascontiguousarray(frames[:, :, 50:150]), 50, 50))
    tall = np.ascontiguousarray(frames.transpose(0, 2, 1, 3))  # 200 x 100 -> rows 50..150
    ours = vcd_core.resize_rgb(tall, 50, 50, crop="center")
    np.testing.assert_array_equal(ours, vcd_core.resize_rgb(np.ascontiguousarray(tall[:, 50:150]), 50, 50))
    # 2:1 output from the 1:2 frame: the window is 100 x 50 rows 75..125.
    ours = vcd_core.resize_rgb(tall, 25, 50, crop="center", interpolation="bilinear")
    expected = vcd_core.resize_rgb(np.ascontiguousarray(tall[:, 75:125]), 25, 50, interpolation="bilinear")
    np.testing.assert_array_equal(ours, expected)


def test_non_contiguous_input_equals_contiguous():
    frames = np.random.default_rng(6).integers(0, 256, size=(2, 40, 60, 3), dtype=np.uint8)
    view = frames[:, ::2, 1::2]
    np.testing.assert_array_equal(
        vcd_core.resize_rgb(view, 9, 13), vcd_core.resize_rgb(np.ascontiguousarray(view), 9, 13)
    )


def test_empty_batch():
    out = vcd_core.resize_rgb(np.zeros((0, 8, 8, 3), np.uint8), 4, 4)
    assert out.shape == (0, 3, 4, 4)


# --- YUV paths ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 41), width=st.integers(1, 41), out_h=sizes, out_w=sizes, interpolation=interpolations,
    crop=crops, seed=st.integers(0, 2**32 - 1),
)
def test_yuv_matches_convert_then_resize(height, width, out_h, out_w, interpolation, crop, seed):
    rng = np.random.default_rng(seed)
    planes = [rgb_to_yuv420p(smooth_rgb(rng, height, width)) for _ in range(2)]
    y, u, v = (np.stack(p) for p in zip(*planes))
    assert u.shape == (2, (height + 1) // 2, (width + 1) // 2)
    expected = np.stack(
        [reference_resize(reference_yuv_to_rgb(*p), out_h, out_w, interpolation, crop) for p in planes]
    )
    from_yuv420p = vcd_core.resize_yuv420p(y, u, v, out_h, out_w, interpolation, crop, "float32", 1)
    np.testing.assert_allclose(from_yuv420p, expected, rtol=0, atol=1e-2)
    from_nv12 = vcd_core.resize_nv12(y, interleave_uv(u, v), out_h, out_w, interpolation, crop, "float32", 1)
    np.testing.assert_array_equal(from_nv12, from_yuv420p)
    as_uint8 = vcd_core.resize_yuv420p(y, u, v, out_h, out_w, interpolation, crop, "uint8", 1)
    np.testing.assert_array_equal(as_uint8, np.floor(from_yuv420p + np.float32(0.5)).astype(np.uint8))


@pytest.mark.parametrize(("height", "width"), [(48, 64), (33, 47), (1, 1)])
def test_yuv_conversion_at_source_size_clamps_out_of_gamut(height, width):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 256, size=(1, height, width), dtype=np.uint8)
    u = rng.integers(0, 256, size=(1, (height + 1) // 2, (width + 1) // 2), dtype=np.uint8)
    v = rng.integers(0, 256, size=u.shape, dtype=np.uint8)
    expected = np.round(reference_yuv_to_rgb(y[0], u[0], v[0])).transpose(2, 0, 1)
    for interpolation in ("area", "bilinear"):
        ours = vcd_core.resize_yuv420p(y, u, v, height, width, interpolation)[0]
        assert np.abs(ours.astype(np.int64) - expected).max() <= 1


def test_yuv420p_matches_ffmpeg_rgb24():
    rng = np.random.default_rng(8)
    height, width = 64, 96
    y = rng.integers(16, 236, size=(height, width), dtype=np.uint8)
    u = rng.integers(16, 241, size=(height // 2, width // 2), dtype=np.uint8)
    v = rng.integers(16, 241, size=(height // 2, width // 2), dtype=np.uint8)
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(height * 3 // 2, width)
    ffmpeg_rgb = av.VideoFrame.from_ndarray(packed, format="yuv420p").to_ndarray(format="rgb24")
    ours = vcd_core.resize_yuv420p(y[None], u[None], v[None], height, width)[0].transpose(1, 2, 0)
    difference = np.abs(ours.astype(np.int64) - ffmpeg_rgb)
    assert difference.max() <= 3 and difference.mean() < 1.5


# --- threading, dtypes, validation ---------------------------------------------------------


@pytest.mark.parametrize("out_dtype", ["uint8", "float32"])
def test_results_do_not_depend_on_thread_count(out_dtype):
    rng = np.random.default_rng(9)
    frames = rng.integers(0, 256, size=(3, 181, 257, 3), dtype=np.uint8)
    y, u, v = rgb_to_yuv420p(frames[0])
    calls = (
        lambda n: vcd_core.resize_rgb(frames, 97, 75, "area", "center", out_dtype, n),
        lambda n: vcd_core.resize_rgb(frames, 300, 75, "bilinear", "squash", out_dtype, n),
        lambda n: vcd_core.resize_nv12(y[None], interleave_uv(u, v)[None], 99, 70, "area", "squash", out_dtype, n),
        lambda n: vcd_core.resize_yuv420p(y[None], u[None], v[None], 224, 224, "area", "squash", out_dtype, n),
    )
    singles = [call(1) for call in calls]
    try:
        # Per-call caps and pool sizes (Note [One persistent pool] in cpp/thread_pool.h), including
        # more threads than tasks and pools bigger than the machine.
        for pool_size in (1, 2, 3, 8):
            vcd_core.set_num_threads(pool_size)
            for call, single in zip(calls, singles):
                for n in (0, 2, 4, 64):
                    np.testing.assert_array_equal(single, call(n))
    finally:
        vcd_core.set_num_threads(0)


def test_bad_options_raise_value_error_naming_allowed_values():
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=re.escape("interpolation must be one of 'bilinear', 'area', got 'cubic'")):
        vcd_core.resize_rgb(frames, 4, 4, interpolation="cubic")
    with pytest.raises(ValueError, match=re.escape("crop must be one of 'squash', 'center', got 'pad'")):
        vcd_core.resize_rgb(frames, 4, 4, crop="pad")
    with pytest.raises(ValueError, match=re.escape("out_dtype must be one of 'uint8', 'float32', got 'float16'")):
        vcd_core.resize_rgb(frames, 4, 4, out_dtype="float16")
    with pytest.raises(ValueError, match=re.escape("out_height and out_width must be in [1, 2^31), got 0 x 4")):
        vcd_core.resize_rgb(frames, 0, 4)
    with pytest.raises(ValueError, match=re.escape("num_threads must be >= 0 (0 = all cores), got -1")):
        vcd_core.resize_rgb(frames, 4, 4, num_threads=-1)


def test_bad_shapes_and_dtypes_raise_value_error_with_values():
    with pytest.raises(ValueError, match=re.escape("frames must have shape (N, H, W, 3), got (1, 8, 8, 4)")):
        vcd_core.resize_rgb(np.zeros((1, 8, 8, 4), np.uint8), 4, 4)
    with pytest.raises(ValueError, match=re.escape("frames must have dtype uint8, got float32")):
        vcd_core.resize_rgb(np.zeros((1, 8, 8, 3), np.float32), 4, 4)
    with pytest.raises(ValueError, match=re.escape("frames must have height and width in [1, 2^31), got shape (1, 0, 8, 3)")):
        vcd_core.resize_rgb(np.zeros((1, 0, 8, 3), np.uint8), 4, 4)
    y = np.zeros((2, 7, 9), np.uint8)
    with pytest.raises(ValueError, match=re.escape("uv must have shape (N, ceil(H/2), 2*ceil(W/2)) = (2, 4, 10)")):
        vcd_core.resize_nv12(y, np.zeros((2, 4, 9), np.uint8), 4, 4)
    with pytest.raises(ValueError, match=re.escape("v must have shape (N, ceil(H/2), ceil(W/2)) = (2, 4, 5) for the given y plane, got (2, 3, 5)")):
        vcd_core.resize_yuv420p(y, np.zeros((2, 4, 5), np.uint8), np.zeros((2, 3, 5), np.uint8), 4, 4)
    with pytest.raises(ValueError, match=re.escape("y must have shape (N, H, W), got (7, 9)")):
        vcd_core.resize_nv12(y[0], np.zeros((4, 10), np.uint8), 4, 4)


# --- Python wrapper ---------------------------------------------------------------------


def test_wrappers_accept_single_frames_and_batches():
    rng = np.random.default_rng(10)
    frame = smooth_rgb(rng, 30, 40)
    config = PreprocessConfig(height=12, width=16, dtype="float32", num_threads=1)
    single = preprocess_rgb(frame, config)
    assert single.shape == (1, 3, 12, 16) and single.dtype == np.float32
    np.testing.assert_array_equal(single, preprocess_rgb(frame[None], config))
    y, u, v = rgb_to_yuv420p(frame)
    from_planar = preprocess_yuv420p(y, u, v, config)
    assert from_planar.shape == (1, 3, 12, 16)
    np.testing.assert_array_equal(preprocess_nv12(y, interleave_uv(u, v), config), from_planar)
    np.testing.assert_allclose(from_planar, single, atol=12)  # same picture after a YUV round trip


def test_preprocess_config_validates():
    assert PreprocessConfig().height == 224
    with pytest.raises(ValueError, match=r"height must be an int >= 1, got 0"):
        PreprocessConfig(height=0)
    with pytest.raises(ValueError, match=r"interpolation must be one of \('bilinear', 'area'\), got 'nearest'"):
        PreprocessConfig(interpolation="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dtype must be one of \('uint8', 'float32'\), got 'float64'"):
        PreprocessConfig(dtype="float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"num_threads must be an int >= 0 \(0 = all cores\), got -2"):
        PreprocessConfig(num_threads=-2)
    with pytest.raises(ValueError, match=r"frames must have 3 \(one frame\) or 4 \(batch\) dimensions"):
        preprocess_rgb(np.zeros((8, 8), np.uint8), PreprocessConfig())
    with pytest.raises(ValueError, match=r"y must have dtype uint8, got int64"):
        preprocess_nv12(np.zeros((8, 8), np.int64), np.zeros((4, 8), np.uint8), PreprocessConfig())
