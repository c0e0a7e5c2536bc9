"""CUDA preprocessing: the Python tap tables (via a numpy model of the kernel's float order), the fatbin, the GPU kernel.

The .cu source itself is run on the CPU in tests/test_kernel_source.py; the fatbin's
architectures are checked in tests/test_fatbin.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cuda_kernel_model import resize_nv12_model
from gpu_support import require_gpu
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.preprocess.cuda import (
    KERNEL_NAMES,
    area_taps,
    bilinear_taps,
    fatbin_kernel_names,
    find_fatbin,
    fold_to_chroma,
    nv12_geometry,
    source_window,
)

vcd_core = pytest.importorskip("vcd_core")
REPO = Path(__file__).resolve().parent.parent


def random_nv12(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    uv = rng.integers(0, 256, ((height + 1) // 2, 2 * ((width + 1) // 2)), dtype=np.uint8)
    return y, uv


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    out_height=st.integers(1, 40),
    out_width=st.integers(1, 40),
    interpolation=st.sampled_from(["area", "bilinear"]),
    crop=st.sampled_from(["squash", "center"]),
    seed=st.integers(0, 2**16),
)
def test_python_tap_tables_in_the_documented_float_order_reproduce_the_cpu_resizer(
    height, width, out_height, out_width, interpolation, crop, seed
) -> None:
    """nv12_geometry's tables + a numpy model of the float order == vcd_core.resize_nv12 (never runs the .cu)."""
    y, uv = random_nv12(np.random.default_rng(seed), height, width)
    expected = vcd_core.resize_nv12(y[None], uv[None], out_height, out_width, interpolation=interpolation, crop=crop)[0]
    got = resize_nv12_model(y, uv, nv12_geometry(height, width, out_height, out_width, interpolation, crop, 0))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("interpolation, crop", [("area", "squash"), ("bilinear", "center")])
def test_python_tap_tables_reproduce_the_cpu_resizer_on_a_realistic_frame(interpolation: str, crop: str) -> None:
    """640x360 -> 224x224: with the other summation order about one pixel per frame differs."""
    y, uv = random_nv12(np.random.default_rng(0), 360, 640)
    expected = vcd_core.resize_nv12(y[None], uv[None], 224, 224, interpolation=interpolation, crop=crop)[0]
    got = resize_nv12_model(y, uv, nv12_geometry(360, 640, 224, 224, interpolation, crop, 0))
    np.testing.assert_array_equal(got, expected)


def test_geometry_is_cached_and_can_key_the_device_tables() -> None:
    geometry = nv12_geometry(360, 640, 224, 224, "area", "squash", 0)
    assert nv12_geometry(360, 640, 224, 224, "area", "squash", 0) is geometry
    tables = {geometry: "uploaded"}  # CudaPreprocessor._device_tables keys its cache like this
    assert tables[geometry] == "uploaded"


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_matches_resize_then_rot90_like_the_cpu_decoder(rotation: int) -> None:
    y, uv = random_nv12(np.random.default_rng(rotation), 30, 50)
    swapped = rotation in (90, 270)
    oh, ow = (24, 16) if not swapped else (16, 24)  # the CPU decoder resizes into the transposed size
    unrotated = vcd_core.resize_nv12(y[None], uv[None], oh, ow, interpolation="area", crop="center")[0]
    expected = np.rot90(unrotated, k=rotation // 90, axes=(1, 2))
    geometry = nv12_geometry(30, 50, 24, 16, "area", "center", rotation)
    got = resize_nv12_model(y, uv, geometry)
    assert got.shape == geometry.slot_shape == (3, 24, 16)
    np.testing.assert_array_equal(got, expected)


def test_tap_tables_sum_to_one_and_stay_in_the_window() -> None:
    for taps, lo, hi in ((area_taps(3, 17, 5), 3, 20), (bilinear_taps(2, 9, 13), 2, 11)):
        for j in range(taps.size):
            a, b = taps.offsets[j], taps.offsets[j + 1]
            assert abs(float(taps.weight[a:b].sum()) - 1.0) < 1e-5
            assert lo <= taps.index[a:b].min() and taps.index[a:b].max() < hi
    chroma = fold_to_chroma(area_taps(0, 8, 2))
    assert chroma.index.tolist() == [0, 1, 2, 3] and np.allclose(chroma.weight, 0.5)


def test_center_window_matches_the_documented_rule() -> None:
    assert source_window("center", 1080, 1920, 224, 224) == (0, 420, 1080, 1080)
    assert source_window("center", 100, 40, 10, 20) == (40, 0, 20, 40)
    assert source_window("squash", 7, 9, 3, 3) == (0, 0, 7, 9)
    with pytest.raises(ValueError, match="crop must be one of"):
        source_window("fit", 7, 9, 3, 3)
    with pytest.raises(ValueError, match="rotation_degrees must be one of"):
        nv12_geometry(10, 10, 4, 4, "area", "squash", 45)


def test_fatbin_contains_the_kernels() -> None:
    fatbin = find_fatbin()
    if fatbin is None:
        pytest.skip("no preprocess_kernels.fatbin in this build (built only where nvcc is available)")
    assert fatbin_kernel_names(fatbin) == list(KERNEL_NAMES)


def test_nvcc_compiles_the_kernels(tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc not installed")
    out = tmp_path / "k.fatbin"
    subprocess.run(
        [nvcc, "--fatbin", "--fmad=false", "-gencode", "arch=compute_90,code=sm_90", "-o", str(out), str(REPO / "cpp/cuda/preprocess_kernels.cu")],
        check=True,
        capture_output=True,
    )
    assert fatbin_kernel_names(out) == list(KERNEL_NAMES)


@pytest.mark.gpu
@pytest.mark.parametrize("interpolation, crop, rotation", [("area", "squash", 0), ("bilinear", "center", 90), ("area", "center", 270)])
def test_gpu_kernel_matches_the_cpu_resizer_on_pitched_planes(interpolation: str, crop: str, rotation: int) -> None:
    require_gpu(("pycuda",))
    import pycuda.driver as cuda

    from runtime.device.cuda import CudaContext
    from runtime.preprocess.cuda import CudaPreprocessor

    rng = np.random.default_rng(7)
    height, width, pitch = 91, 130, 256
    y, uv = random_nv12(rng, height, width)
    context = CudaContext.get(0)
    with context.scope():
        pre = CudaPreprocessor(context)
        stream = cuda.Stream()
        y_pitched = np.zeros((height, pitch), np.uint8)
        y_pitched[:, :width] = y
        uv_pitched = np.zeros((uv.shape[0], pitch), np.uint8)
        uv_pitched[:, : uv.shape[1]] = uv
        d_y, d_uv = cuda.to_device(y_pitched), cuda.to_device(uv_pitched)
        geometry = nv12_geometry(height, width, 32, 48, interpolation, crop, rotation)
        slots = 3
        out = cuda.mem_alloc(slots * int(np.prod(geometry.slot_shape)))
        pre.nv12_to_slot(int(d_y), pitch, int(d_uv), pitch, geometry, int(out) + int(np.prod(geometry.slot_shape)), stream)
        stream.synchronize()
        host = np.empty((slots, *geometry.slot_shape), np.uint8)
        cuda.memcpy_dtoh(host, out)
    # The CPU resizer on the unpadded planes, into the (transposed for 90/270) size, rotated.
    out_height, out_width = (48, 32) if rotation in (90, 270) else (32, 48)
    expected = vcd_core.resize_nv12(y[None], uv[None], out_height, out_width, interpolation=interpolation, crop=crop)[0]
    np.testing.assert_array_equal(host[1], np.rot90(expected, k=rotation // 90, axes=(1, 2)))
