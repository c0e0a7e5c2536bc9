"""A corpus of broken, unusual and hostile inputs, generated on the fly (nothing binary is committed).

Each kind has its expected outcome: descriptors, no descriptors (a zero-length budget), or a
named error at a named stage."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.video_factory import moving_pattern, write_video


def zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def truncated_mp4(path: Path) -> None:
    good = write_video(path.with_suffix(".full.mp4"), num_frames=40, fps=10)
    data = good.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    good.unlink()


def text_named_mp4(path: Path) -> None:
    path.write_text("this is not a video\n" * 100)


def audio_only(path: Path) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10.0) * 0.1).astype(np.float32)[None, :]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def no_leading_keyframe(path: Path) -> None:
    """Remux an H.264 stream without its first keyframe: leading frames reference a missing picture."""
    source = path.with_suffix(".src.mp4")
    with av.open(str(source), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1", "g": "10", "bf": "0"}
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(moving_pattern(i, 48, 64), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(source)) as inp, av.open(str(path), mode="w") as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        skipped_key = False
        for packet in inp.demux(in_stream):
            if packet.size == 0:
                continue
            if packet.is_keyframe and not skipped_key:
                skipped_key = True
                continue
            packet.stream = out_stream
            out.mux(packet)
    source.unlink()


def one_frame(path: Path) -> None:
    write_video(path, num_frames=1, fps=10)


def very_long_still(path: Path) -> None:
    """10 minutes of a still image at 0.2 fps: long but cheap."""
    still = moving_pattern(0, 48, 64)
    write_video(path, frames=[still] * 120, fps=Fraction(1, 5))


def four_k(path: Path) -> None:
    write_video(path, num_frames=3, height=2160, width=3840, fps=10)


def tiny(path: Path) -> None:
    write_video(path, num_frames=10, height=16, width=16, fps=10)


def odd_size(path: Path) -> None:
    write_video(path, num_frames=10, height=49, width=65, fps=10, pix_fmt="yuv444p")


def unknown_codec(path: Path) -> None:
    """A valid MP4 whose video sample entry names a codec no decoder knows ('avc1' -> 'zzzz')."""
    good = write_video(path.with_suffix(".src.mp4"), num_frames=10, fps=10)
    data = good.read_bytes()
    good.unlink()
    if b"avc1" not in data:
        raise RuntimeError("expected an avc1 sample entry")
    path.write_bytes(data.replace(b"avc1", b"zzzz"))


def variable_frame_rate(path: Path) -> None:
    pts_ms = [0, 40, 80, 500, 520, 2000, 2100, 2150, 4000]
    write_video(path, num_frames=len(pts_ms), pts=pts_ms, time_base=Fraction(1, 1000), fps=10)


def rotated(path: Path) -> None:
    write_video(path, num_frames=20, fps=10, rotation=90)


def _encode(path: Path, codec: str, num_frames: int = 20, width: int = 64, height: int = 48, fps: int = 10,
            pix_fmt: str = "yuv420p", options: dict | None = None, container_format: str | None = None,
            container_options: dict | None = None, first_pts: int = 0) -> Path:
    """Encode ``moving_pattern`` frames with any codec/container PyAV has (pts in 1/fps units)."""
    with av.open(str(path), mode="w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(moving_pattern(i, height, width), format="rgb24")
            frame.pts, frame.time_base = first_pts + i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


_X264 = {"preset": "ultrafast", "threads": "1"}


def raw_h264(path: Path) -> None:
    """An Annex-B elementary stream (what ``ffmpeg -f h264`` writes): no container, no packet pts."""
    _encode(path, "libx264", options=_X264, container_format="h264")


def webm_vp9(path: Path) -> None:
    _encode(path, "libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8", "threads": "1"}, container_format="webm")


def mkv_hevc(path: Path) -> None:
    _encode(path, "libx265", options={"preset": "ultrafast", "x265-params": "log-level=none:pools=1:frame-threads=1"},
            container_format="matroska")


def av1(path: Path) -> None:
    _encode(path, "libsvtav1", width=64, height=64, options={"preset": "12"})


def ten_bit(path: Path) -> None:
    _encode(path, "libx264", pix_fmt="yuv420p10le", options=_X264)


def interlaced(path: Path) -> None:
    _encode(path, "libx264", options={**_X264, "x264-params": "interlaced=1:tff=1"})


def header_claims_8k(path: Path) -> None:
    """The MP4 sample entry says 7680x4320; the H.264 stream inside is 64x48."""
    data = bytearray(write_video(path, num_frames=10, fps=10).read_bytes())
    entry = data.find(b"avc1", data.find(b"stsd"))
    if entry < 0:
        raise RuntimeError("expected an avc1 sample entry after stsd")
    offset = entry + 4 + 6 + 2 + 16  # type, reserved, data_reference_index, pre_defined/reserved
    data[offset : offset + 4] = struct.pack(">HH", 7680, 4320)
    path.write_bytes(bytes(data))


def negative_start(path: Path) -> None:
    """Timestamps from -1 s: the MP4 muxer keeps the first second as pre-roll behind an edit list
    (discard packets); the video proper is the 1 s from 0."""
    _encode(path, "libx264", options=_X264, first_pts=-10)


def cut_mid_gop(path: Path) -> None:
    """A 6 s video (keyframe every 3 s, index up front) cut at 75% of its bytes, mid-GOP."""
    source = _encode(path.with_suffix(".src.mp4"), "libx264", num_frames=60, options={**_X264, "g": "30"},
                     container_options={"movflags": "faststart"})
    data = source.read_bytes()
    source.unlink()
    path.write_bytes(data[: int(len(data) * 0.75)])


def garbage_mid_file(path: Path) -> None:
    """2000 random bytes written over the middle of the media data (offsets unchanged)."""
    source = _encode(path.with_suffix(".src.mp4"), "libx264", num_frames=60, options={**_X264, "g": "30"},
                     container_options={"movflags": "faststart"})
    data = bytearray(source.read_bytes())
    source.unlink()
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def directory(path: Path) -> None:
    path.mkdir()
    (path / "inner.mp4").write_bytes(b"")


def unreadable(path: Path) -> None:
    write_video(path, num_frames=10, fps=10)
    path.chmod(0)


def symlink_loop(path: Path) -> None:
    other = path.with_name(path.stem + "-loop.mp4")
    other.symlink_to(path.name)
    path.symlink_to(other.name)


def dangling_symlink(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere.mp4").name)


def fifo(path: Path) -> None:
    """A named pipe: opening it for reading would block forever."""
    os.mkfifo(path)


def zero_duration(path: Path) -> None:
    """A real 1 s video whose metadata duration is 0: its budget, ceil(0), is 0 descriptors."""
    write_video(path, num_frames=10, fps=10)


DESCRIPTORS = "descriptors"  # at least one descriptor row
NO_ROWS = "no rows"  # succeeds with zero descriptors (not an error)
ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class Kind:
    """One hostile input and its expected outcome.

    Attributes:
        make: writes the input at the given path (None: nothing is created).
        expect: ``DESCRIPTORS``, ``NO_ROWS``, or the substring the error message must contain.
        stage: the failure's stage for errors (``input`` = refused before decoding).
        duration: the metadata's duration_sec (None: the id is absent from the metadata).
    """

    make: Callable[[Path], None] | None
    expect: str
    stage: str = "decode"
    duration: float | None = 5.0

    @property
    def is_error(self) -> bool:
        return self.expect not in (DESCRIPTORS, NO_ROWS)


# id -> kind. The CSVs of the corpus layout add five more kinds (see tests/test_robustness.py):
# a byte-order mark, CRLF line ends, extra columns, duplicate metadata ids and a subset id listed twice.
CORPUS: dict[str, Kind] = {
    "Q000001": Kind(zero_byte, "empty file"),
    "Q000002": Kind(truncated_mp4, "not a readable video container"),
    "Q000003": Kind(text_named_mp4, "not a readable video container"),
    "Q000004": Kind(audio_only, "no video stream"),
    "Q000005": Kind(no_leading_keyframe, DESCRIPTORS),
    "Q000006": Kind(one_frame, DESCRIPTORS),
    "Q000007": Kind(very_long_still, DESCRIPTORS, duration=600.0),
    "Q000008": Kind(four_k, DESCRIPTORS),
    "Q000009": Kind(tiny, DESCRIPTORS),
    "Q000010": Kind(odd_size, DESCRIPTORS),
    "Q000011": Kind(unknown_codec, "codec"),
    "Q000012": Kind(variable_frame_rate, DESCRIPTORS, duration=None),  # budget from the decoded duration
    "Q000013": Kind(rotated, DESCRIPTORS),
    "Q000014": Kind(lambda p: write_video(p, num_frames=40, fps=10), DESCRIPTORS, duration=2.0),  # file 4 s, metadata 2 s
    "Q000015": Kind(raw_h264, DESCRIPTORS),  # 20 frames at 10 fps (SPS timing), no packet timestamps
    "Q000016": Kind(webm_vp9, DESCRIPTORS),
    "Q000017": Kind(mkv_hevc, DESCRIPTORS),
    "Q000018": Kind(av1, DESCRIPTORS),
    "Q000019": Kind(ten_bit, DESCRIPTORS),
    "Q000020": Kind(interlaced, DESCRIPTORS),
    "Q000021": Kind(header_claims_8k, DESCRIPTORS),
    "Q000022": Kind(negative_start, DESCRIPTORS),
    "Q000023": Kind(cut_mid_gop, DESCRIPTORS),
    "Q000024": Kind(garbage_mid_file, DESCRIPTORS),
    "Q000025": Kind(directory, "is a directory", stage="input"),
    # root reads any file, so for root an unreadable file is an ordinary video
    "Q000026": Kind(unreadable, DESCRIPTORS if ROOT else "permission denied", stage="input"),
    "Q000027": Kind(symlink_loop, "symlink loop", stage="input"),
    "Q000028": Kind(dangling_symlink, "dangling symlink", stage="input"),
    "Q000029": Kind(fifo, "not a regular file", stage="input"),
    "Q000030": Kind(zero_duration, NO_ROWS, duration=0.0),
    "Q000031": Kind(None, "no such file", stage="input", duration=3.0),  # listed, no file
    "Q000032": Kind(one_frame, DESCRIPTORS, duration=None),  # a subset id absent from the metadata
    "../Q000006": Kind(None, "unusable video id", stage="input", duration=None),  # would escape query/
}
