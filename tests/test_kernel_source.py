"""The CUDA kernel source, compiled as host C++, vs the CPU resizer: bit-exact, on every CI run.

``vcd_core._cuda_kernels_on_host`` is ``cpp/cuda/preprocess_kernels.cu`` built by the host
compiler through ``cpp/cuda/host_shim.h`` (CMake option VCD_KERNELS_ON_HOST, ON by default)
and launched over the same grid as the GPU launcher. It is fed the tap tables production
computes (``runtime.preprocess.cuda.nv12_geometry``) and compared with
``vcd_core.resize_nv12``, an independent C++ implementation (Note [Bit-exact parity with the
CPU path] in the .cu file).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.preprocess.cuda import Nv12Geometry, nv12_geometry

vcd_core = pytest.importorskip("vcd_core")


@pytest.fixture(scope="module")
def kernels():
    host = getattr(vcd_core, "_cuda_kernels_on_host", None)
    assert host is not None, (
        "vcd_core has no _cuda_kernels_on_host: rebuild it with the CMake option VCD_KERNELS_ON_HOST=ON (the default)"
    )
    return host


def random_nv12(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    uv = rng.integers(0, 256, ((height + 1) // 2, 2 * ((width + 1) // 2)), dtype=np.uint8)
    return y, uv


def pitched(plane: np.ndarray, pitch: int, fill: int = 255) -> np.ndarray:
    """The plane in rows of ``pitch`` bytes, the padding filled with ``fill`` (never to be read)."""
    out = np.full((plane.shape[0], pitch), fill, dtype=np.uint8)
    out[:, : plane.shape[1]] = plane
    return out


def run_kernel(kernels, y, uv, geometry: Nv12Geometry, **launch) -> np.ndarray:
    def table(taps):
        return taps.offsets, taps.index, taps.weight

    return kernels.nv12_to_rgb_planar_u8(
        y, uv, table(geometry.x), table(geometry.y), table(geometry.chroma_x), table(geometry.chroma_y),
        geometry.out_height, geometry.out_width, geometry.rotation, **launch,
    )


def cpu_resizer(y, uv, out_height, out_width, interpolation, crop, rotation_degrees=0) -> np.ndarray:
    """vcd_core.resize_nv12 as the CPU decoder uses it: the transposed size for 90/270, then rot90."""
    if rotation_degrees in (90, 270):
        out_height, out_width = out_width, out_height
    out = vcd_core.resize_nv12(y[None], uv[None], out_height, out_width, interpolation=interpolation, crop=crop)[0]
    return np.rot90(out, k=rotation_degrees // 90, axes=(1, 2))


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 61),
    width=st.integers(1, 61),
    out_height=st.integers(1, 37),
    out_width=st.integers(1, 37),
    interpolation=st.sampled_from(["area", "bilinear"]),
    crop=st.sampled_from(["squash", "center"]),
    seed=st.integers(0, 2**16),
)
def test_kernel_source_is_bit_exact_with_the_cpu_resizer(
    kernels, height, width, out_height, out_width, interpolation, crop, seed
) -> None:
    y, uv = random_nv12(np.random.default_rng(seed), height, width)
    got = run_kernel(kernels, y, uv, nv12_geometry(height, width, out_height, out_width, interpolation, crop, 0))
    np.testing.assert_array_equal(got, cpu_resizer(y, uv, out_height, out_width, interpolation, crop))


@pytest.mark.parametrize(
    "height, width, out_height, out_width, interpolation, crop",
    [
        (360, 640, 224, 224, "area", "squash"),  # the pipeline's case: 640x360 yuv420p -> 224x224
        (360, 640, 224, 224, "bilinear", "center"),
        (361, 643, 97, 131, "area", "center"),  # odd everything
        (33, 47, 80, 61, "area", "squash"),  # upscaling: area falls back to bilinear
        (241, 99, 57, 200, "bilinear", "squash"),  # one axis down, one up
    ],
)
def test_kernel_source_matches_on_realistic_and_odd_frames(
    kernels, height, width, out_height, out_width, interpolation, crop
) -> None:
    y, uv = random_nv12(np.random.default_rng(height * width), height, width)
    geometry = nv12_geometry(height, width, out_height, out_width, interpolation, crop, 0)
    np.testing.assert_array_equal(
        run_kernel(kernels, y, uv, geometry), cpu_resizer(y, uv, out_height, out_width, interpolation, crop)
    )


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("interpolation, crop", [("area", "center"), ("bilinear", "squash")])
def test_kernel_source_rotates_like_the_cpu_decoder(kernels, rotation: int, interpolation: str, crop: str) -> None:
    y, uv = random_nv12(np.random.default_rng(rotation), 91, 130)
    geometry = nv12_geometry(91, 130, 32, 48, interpolation, crop, rotation)
    got = run_kernel(kernels, y, uv, geometry)
    assert got.shape == geometry.slot_shape == (3, 32, 48)
    np.testing.assert_array_equal(got, cpu_resizer(y, uv, 32, 48, interpolation, crop, rotation))


@pytest.mark.parametrize("block", [(32, 8), (7, 3), (1, 1), (64, 64)])
def test_pitch_padding_and_launch_shape_do_not_change_the_result(kernels, block: tuple[int, int]) -> None:
    """NVDEC planes are pitched; any block shape whose grid covers the output gives the same slot."""
    y, uv = random_nv12(np.random.default_rng(5), 75, 101)
    geometry = nv12_geometry(75, 101, 29, 43, "area", "squash", 0)
    got = run_kernel(kernels, pitched(y, 128), pitched(uv, 160), geometry, block_x=block[0], block_y=block[1])
    np.testing.assert_array_equal(got, cpu_resizer(y, uv, 29, 43, "area", "squash"))


def test_u8_to_f32_grid_stride_loop_covers_every_element(kernels) -> None:
    src = np.random.default_rng(1).integers(0, 256, 10_007, dtype=np.uint8)
    for blocks, threads in ((1, 1), (3, 256), (65535, 256)):
        np.testing.assert_array_equal(kernels.u8_to_f32(src, blocks, threads), src.astype(np.float32))


def test_bad_tap_tables_are_rejected_before_the_kernel_reads_out_of_bounds(kernels) -> None:
    y, uv = random_nv12(np.random.default_rng(2), 10, 10)
    good = nv12_geometry(10, 10, 4, 4, "area", "squash", 0)
    bad_index = good.x.index.copy()
    bad_index[-1] = 10
    with pytest.raises(ValueError, match=r"x: index 10 outside \[0, 10\)"):
        kernels.nv12_to_rgb_planar_u8(
            y, uv, (good.x.offsets, bad_index, good.x.weight), (good.y.offsets, good.y.index, good.y.weight),
            (good.chroma_x.offsets, good.chroma_x.index, good.chroma_x.weight),
            (good.chroma_y.offsets, good.chroma_y.index, good.chroma_y.weight), 4, 4,
        )
    five_rows = nv12_geometry(10, 10, 5, 4, "area", "squash", 0)
    mismatched = Nv12Geometry(4, 4, 0, good.x, five_rows.y, good.chroma_x, good.chroma_y)
    with pytest.raises(ValueError, match=r"y: offsets must have out_size \+ 1 = 5 entries"):
        run_kernel(kernels, y, uv, mismatched)
