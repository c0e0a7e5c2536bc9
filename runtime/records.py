"""The record types that cross stages: video tasks and stream facts, per-video embeddings and
failures, frame and video pairs from search, matched segments.

Plain frozen data only: this module imports nothing of the project, so every stage can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np


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
        decode_mode: how the decoder reconstructed the stream (``full``, ``nonref``, ``keyframes``...).
        max_time_error: worst |requested sample time - time of the frame used| in seconds; the
            intervals always carry the real frame times (None = not measured).
        views: int (K,) which view of its frame each row embeds (0 = the whole frame or its
            border-cropped content; see ``runtime.preprocess.layout``); None = every row is a whole frame.
        windows: int (K,) the layout time window each row's view belongs to (views are decided per
            window of consecutive samples: Note [Layout windows] in ``runtime/preprocess/layout.py``);
            None = not windowed (``views`` alone, or whole frames).
        layout: the per-video layout decision and its confidences (JSON-able), None = not analysed.
        sampled: samples decoded before pre-selection chose the rows inferred (``runtime.preprocess.preselect``),
            None = no pre-selection (every sample was inferred).
        inputs: uint8 (K, 3, H, W) the rows' model inputs, kept only for the orientation probe of the layout
            views (``runtime/pipeline/turned_views.py``, which drops them); None = not kept.
    """

    video_id: str
    intervals: np.ndarray
    embeddings: np.ndarray
    info: VideoInfo
    timings: dict[str, float] = field(default_factory=dict)
    decoder: str = ""
    notes: tuple[str, ...] = ()
    decode_mode: str = ""
    max_time_error: float | None = None
    views: np.ndarray | None = None
    layout: dict | None = None
    sampled: int | None = None
    windows: np.ndarray | None = None
    inputs: np.ndarray | None = None


@dataclass(frozen=True)
class VideoFailure:
    """A video that produced no embeddings, and why."""

    video_id: str
    path: str
    stage: str
    error_type: str
    message: str


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
class VideoTask:
    """One video to process.

    Attributes:
        video_id: id from the CSVs.
        path: the video file (may be missing: the pipeline reports that per video).
        duration: duration in seconds from the metadata, or None when the metadata lacks it.
    """

    video_id: str
    path: Path
    duration: float | None


@dataclass(frozen=True)
class Match:
    """A predicted or ground-truth copied segment: [query_start, query_end) of the query
    video matches [ref_start, ref_end) of the reference video (seconds).

    Ground truth has no score; it gets 1.0 as in the official reader.
    """

    query_id: str
    ref_id: str
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float = 1.0

    def __post_init__(self) -> None:
        values = (self.query_start, self.query_end, self.ref_start, self.ref_end, self.score)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"match values must be finite, got {self}")
        if self.query_end < self.query_start or self.ref_end < self.ref_start:
            raise ValueError(f"match segments must have end >= start, got {self}")

    @property
    def pair_id(self) -> tuple[str, str]:
        return (self.query_id, self.ref_id)

    def overlaps(self, other: Match) -> bool:
        """Whether the two (query x reference) boxes share a positive area."""
        query_overlap = min(self.query_end, other.query_end) - max(self.query_start, other.query_start)
        ref_overlap = min(self.ref_end, other.ref_end) - max(self.ref_start, other.ref_start)
        return query_overlap > 0 and ref_overlap > 0


class FramePair(NamedTuple):
    """One query frame matched to one reference frame."""

    query_id: str
    ref_id: str
    query_timestamps: tuple[float, float]
    ref_timestamps: tuple[float, float]
    score: float


@dataclass(frozen=True)
class CandidatePair:
    """A (query video, reference video) pair with its aggregated score."""

    query_id: str
    ref_id: str
    score: float
