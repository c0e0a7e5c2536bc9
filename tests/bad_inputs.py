"""A corpus of broken and unusual inputs, generated on the fly (nothing binary is committed)."""

from __future__ import annotations

from collections.abc import Callable
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


# id -> (maker, whether it should yield descriptors)
CORPUS: dict[str, tuple[Callable[[Path], None], bool]] = {
    "Q000001": (zero_byte, False),
    "Q000002": (truncated_mp4, False),
    "Q000003": (text_named_mp4, False),
    "Q000004": (audio_only, False),
    "Q000005": (no_leading_keyframe, True),
    "Q000006": (one_frame, True),
    "Q000007": (very_long_still, True),
    "Q000008": (four_k, True),
    "Q000009": (tiny, True),
    "Q000010": (odd_size, True),
    "Q000011": (unknown_codec, False),
    "Q000012": (variable_frame_rate, True),
    "Q000013": (rotated, True),
}
