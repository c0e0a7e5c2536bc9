"""What the extraction stage hands to postprocessing: raw model embeddings per video."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.decode.base import VideoInfo


@dataclass(frozen=True)
class VideoEmbeddings:
    """Model output for the sampled frames of one video, in time order.

    Attributes:
        video_id: id from the metadata.
        intervals: float64 (K, 2) [start, end) seconds per sample.
        embeddings: float32 (K, D) L2-normalised model output.
        info: stream facts of the decoded file.
        timings: seconds per stage (``decode``, ``infer``...).
        decoder: name of the decoder used (``pyav``, ``nvdec``); fallbacks are recorded here.
        notes: free-form per-video remarks (e.g. why NVDEC fell back to the CPU).
    """

    video_id: str
    intervals: np.ndarray
    embeddings: np.ndarray
    info: VideoInfo
    timings: dict[str, float] = field(default_factory=dict)
    decoder: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoFailure:
    """A video that produced no embeddings, and why."""

    video_id: str
    path: str
    stage: str
    error_type: str
    message: str
