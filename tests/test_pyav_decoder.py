from fractions import Fraction

import av
import numpy as np
import pytest

from runtime.decode.base import DecodeError
from runtime.decode.pyav import PyAVDecoder
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.cpu import preprocess_rgb
from runtime.sampling import SamplingPolicy
from tests.video_factory import write_video

CONFIG = PreprocessConfig(height=32, width=32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", num_frames=30, fps=10)


def test_probe(clip):
    info = PyAVDecoder().probe(clip)
    assert (info.width, info.height, info.codec, info.rotation) == (64, 48, "h264", 0)
    assert info.fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(3.0, abs=0.11)


def test_one_frame_per_second(clip):
    decoded = PyAVDecoder().decode(clip, SamplingPolicy(fps=1.0), CONFIG)
    assert decoded.images.shape == (3, 3, 32, 32) and decoded.images.dtype == np.uint8
    np.testing.assert_allclose(decoded.intervals, [[0, 1], [1, 2], [2, 3]], atol=1e-6)
    assert decoded.backend == "pyav" and decoded.decode_seconds > 0


def test_fast_yuv_path_matches_ffmpeg_rgb(clip):
    decoded = PyAVDecoder().decode(clip, SamplingPolicy(fps=1.0), CONFIG)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    reference = preprocess_rgb(np.stack([frames[0], frames[10], frames[20]]), CONFIG)
    diff = np.abs(decoded.images.astype(int) - reference.astype(int))
    assert diff.mean() < 2.0 and diff.max() <= 12


def test_explicit_times_select_the_displayed_frame(clip):
    decoded = PyAVDecoder().decode(clip, SamplingPolicy(times=(0.0, 2.55)), CONFIG)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    reference = preprocess_rgb(np.stack([frames[0], frames[25]]), CONFIG)
    assert np.abs(decoded.images.astype(int) - reference.astype(int)).mean() < 2.0


def test_rotation_metadata_is_applied(tmp_path):
    frames = [np.zeros((48, 64, 3), np.uint8) for _ in range(10)]
    for f in frames:
        f[:, :32] = 255  # left half white
    plain = write_video(tmp_path / "plain.mp4", frames=frames, fps=10)
    rotated = write_video(tmp_path / "rot.mp4", frames=frames, fps=10, rotation=90)
    decoder = PyAVDecoder()
    assert decoder.probe(rotated).rotation in (90, 270)
    a = decoder.decode(plain, SamplingPolicy(), CONFIG).images[0]
    b = decoder.decode(rotated, SamplingPolicy(), CONFIG).images[0]
    k = decoder.probe(rotated).rotation // 90
    np.testing.assert_array_equal(b, np.rot90(a, k=k, axes=(1, 2)))
    assert not np.array_equal(a, b)


def test_variable_frame_rate(tmp_path):
    pts_ms = [0, 100, 200, 300, 4000, 4100, 4200, 9000]  # long gaps: frames are held on screen
    path = write_video(tmp_path / "vfr.mp4", num_frames=len(pts_ms), fps=10, pts=pts_ms, time_base=Fraction(1, 1000))
    decoded = PyAVDecoder().decode(path, SamplingPolicy(fps=1.0), CONFIG)
    # 1 fps over ~9-10 s, but seconds 1-3 all show the 0.3 s frame and 5-8 the 4.2 s frame: merged.
    starts = decoded.intervals[:, 0].tolist()
    assert starts[:4] == [0.0, 1.0, 4.0, 5.0]
    assert np.all(decoded.intervals[1:, 0] == decoded.intervals[:-1, 1])
    assert decoded.intervals[1, 1] == 4.0 and decoded.intervals[3, 1] == 9.0


def test_non_yuv420_pixel_format(tmp_path):
    path = write_video(tmp_path / "444.mp4", num_frames=10, pix_fmt="yuv444p", fps=10)
    decoded = PyAVDecoder().decode(path, SamplingPolicy(), CONFIG)
    assert decoded.images.shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
        (lambda p: (p.write_text("not a video at all\n" * 50), p)[1], "not a readable video container"),
    ],
)
def test_bad_files_raise_decode_error(tmp_path, make, message):
    path = make(tmp_path / "bad.mp4")
    with pytest.raises(DecodeError, match=message):
        PyAVDecoder().decode(path, SamplingPolicy(), CONFIG)


def test_truncated_file_keeps_what_decodes(tmp_path, clip):
    data = clip.read_bytes()
    path = tmp_path / "trunc.mp4"
    path.write_bytes(data[: len(data) // 2])
    try:
        decoded = PyAVDecoder().decode(path, SamplingPolicy(), CONFIG)
    except DecodeError as exc:  # an MP4 cut before its index cannot be opened at all
        assert "trunc.mp4" in str(exc)
    else:
        assert 1 <= len(decoded.images) <= 3


def test_timeout(clip):
    with pytest.raises(DecodeError, match="timeout"):
        PyAVDecoder(timeout_seconds=0.0).decode(clip, SamplingPolicy(), CONFIG)
