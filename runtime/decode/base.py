"""Decoder interface: a video file in, the sampled frames (model-ready) out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from runtime.preprocess import PreprocessConfig
    from runtime.sampling import SamplingPolicy


class DecodeError(RuntimeError):
    """A video could not be opened or decoded; the message says which file and why."""


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts of a video file.

    Attributes:
        path: the file.
        duration: seconds (container or stream duration; frame-derived when both are missing).
        fps: average frame rate (frames per second; 0.0 when unknown).
        width, height: coded frame size in pixels (before rotation).
        codec: decoder name (``h264``, ``hevc``...).
        rotation: display rotation in degrees (0, 90, 180, 270) from the stream's metadata.
        num_frames: frame count reported by the container, or None.
        pixel_format: decoded pixel format (``yuv420p``...).
    """

    path: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    rotation: int = 0
    num_frames: int | None = None
    pixel_format: str | None = None


@dataclass(frozen=True)
class DecodedVideo:
    """Sampled frames of one video, preprocessed for the model.

    Attributes:
        info: stream facts.
        images: uint8 (K, 3, H, W) model input, one per sample, in time order.
        intervals: float64 (K, 2) [start, end) seconds each sample stands for.
        decode_seconds: wall time spent decoding and preprocessing.
        backend: name of the decoder that produced it (``pyav``, ``nvdec``...).
    """

    info: VideoInfo
    images: np.ndarray
    intervals: np.ndarray
    decode_seconds: float
    backend: str


class Decoder(Protocol):
    """Decodes a file, keeping only the frames the sampling policy selects."""

    name: str

    def probe(self, path: str | Path) -> VideoInfo:
        """Read stream facts without decoding frames."""
        ...

    def decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig) -> DecodedVideo:
        """Decode, sample and preprocess one video. Raises DecodeError on failure."""
        ...
