"""Small synthetic videos made with PyAV for tests (content is deterministic per seed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_pattern(index: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """An RGB frame with a textured pattern that shifts over time (so frames differ)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(max(height // 8, 1) + 2, max(width // 8, 1) + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    shift = index % 8
    frame = big[shift : shift + height, shift : shift + width]
    if frame.shape[:2] != (height, width):
        frame = np.resize(frame, (height, width, 3))
    return np.ascontiguousarray(frame)


def write_video(
    path: Path,
    num_frames: int = 30,
    height: int = 48,
    width: int = 64,
    fps: float | Fraction = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    seed: int = 0,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int = 0,
    frames: list[np.ndarray] | None = None,
) -> Path:
    """Encode a video. ``pts`` (in ``time_base`` units) makes it variable frame rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "threads": "1"}
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        count = len(frames) if frames is not None else num_frames
        for i in range(count):
            image = frames[i] if frames is not None else moving_pattern(i, height, width, seed)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            else:
                frame.pts = i
                frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
