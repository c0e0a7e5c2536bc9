"""NVDEC decoder: fallback rules and frame-plane parsing on the CPU; decoding parity with PyAV on a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpu_support import require_gpu

from runtime.decode.nvdec import _frame_planes, _NvdecUnusable, nvdec_fallback_reason
from runtime.records import VideoInfo


def info(codec: str = "h264", width: int = 1280, height: int = 720, pixel_format: str = "yuv420p") -> VideoInfo:
    return VideoInfo(path="x.mp4", duration=10.0, fps=30.0, width=width, height=height, codec=codec, pixel_format=pixel_format)


@pytest.mark.parametrize(
    "video, expected",
    [
        (info(), None),
        (info(codec="hevc", width=7680, height=4320), None),
        (info(width=64, height=48), None),
        (info(codec="prores"), "codec 'prores' is not decoded by NVDEC"),
        (info(width=32, height=48), "below NVDEC's minimum 48x16"),
        (info(width=64, height=8), "below NVDEC's minimum 48x16"),
        (info(width=4608, height=2160), "exceeds NVDEC's 4096 limit for h264"),
        (info(pixel_format="yuv420p10le"), "pixel format 'yuv420p10le' is not 8-bit"),
        (info(pixel_format="yuv444p"), "pixel format 'yuv444p'"),
        (info(pixel_format="yuvj420p"), "pixel format 'yuvj420p'"),
    ],
)
def test_fallback_reason(video: VideoInfo, expected: str | None) -> None:
    reason = nvdec_fallback_reason(video)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


class FakeView:
    def __init__(self, ptr: int, shape: tuple, strides: tuple | None, typestr: str = "|u1") -> None:
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": shape, "strides": strides, "typestr": typestr, "version": 3}


class FakeFrame:
    def __init__(self, views: list[FakeView]) -> None:
        self._views = views

    def cuda(self) -> list[FakeView]:
        return self._views


def test_frame_planes_reads_pointers_and_pitches() -> None:
    frame = FakeFrame([FakeView(1000, (720, 1280, 1), (1536, 1, 1)), FakeView(1000 + 1536 * 720, (360, 640, 2), (1536, 2, 1))])
    planes = _frame_planes(frame)
    assert (planes.y_ptr, planes.y_pitch, planes.uv_ptr, planes.uv_pitch) == (1000, 1536, 1000 + 1536 * 720, 1536)
    assert (planes.height, planes.width) == (720, 1280)
    packed = _frame_planes(FakeFrame([FakeView(8, (48, 64, 1), None), FakeView(8 + 48 * 64, (24, 32, 2), None)]))
    assert packed.y_pitch == 64 and packed.uv_pitch == 64


def test_frame_planes_rejects_non_nv12_output() -> None:
    with pytest.raises(_NvdecUnusable, match="expected NV12"):
        _frame_planes(FakeFrame([FakeView(0, (10, 10, 1), None)]))
    with pytest.raises(_NvdecUnusable, match="expected 8-bit"):
        _frame_planes(FakeFrame([FakeView(0, (10, 10, 1), None, "<u2"), FakeView(0, (5, 5, 2), None, "<u2")]))


@pytest.mark.gpu
@pytest.mark.parametrize("rotation", [0, 90])
def test_nvdec_frames_match_pyav(tmp_path: Path, rotation: int) -> None:
    require_gpu(("pycuda", "PyNvVideoCodec"))
    from video_factory import write_video

    from runtime.decode.nvdec import NvdecDecoder
    from runtime.decode.pyav import PyAVDecoder
    from runtime.preprocess.config import PreprocessConfig
    from runtime.sampling import SamplingPolicy

    path = write_video(tmp_path / "v.mp4", num_frames=60, height=96, width=160, fps=25, rotation=rotation)
    policy, config = SamplingPolicy(fps=2.0), PreprocessConfig(height=64, width=64)
    cpu = PyAVDecoder().decode(path, policy, config)
    gpu = NvdecDecoder().decode(path, policy, config)
    assert gpu.backend == "nvdec"
    np.testing.assert_array_equal(gpu.intervals, cpu.intervals)
    # H.264 decoding is bit-exact and the kernel mirrors the CPU resizer: allow 1 LSB for safety
    assert np.abs(gpu.images.astype(int) - cpu.images.astype(int)).max() <= 1


@pytest.mark.gpu
def test_unsupported_stream_falls_back_to_pyav_with_a_note(tmp_path: Path) -> None:
    require_gpu(("pycuda", "PyNvVideoCodec"))
    from video_factory import write_video

    from runtime.decode.nvdec import NvdecDecoder
    from runtime.preprocess.config import PreprocessConfig
    from runtime.sampling import SamplingPolicy

    path = write_video(tmp_path / "tiny.mp4", num_frames=10, height=16, width=32, fps=10)  # below 48x16
    decoded = NvdecDecoder().decode(path, SamplingPolicy(fps=1.0), PreprocessConfig(height=32, width=32))
    assert decoded.backend == "pyav" and decoded.images.shape[0] >= 1
