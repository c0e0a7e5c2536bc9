"""Decoder interfaces: a video file in, the sampled frames (model-ready) out, whole (``Decoder``) or
frame by frame into the pipeline's batches (``DecodeSession`` writing into a ``FrameSink``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from runtime.records import VideoInfo

if TYPE_CHECKING:
    from runtime.preprocess.config import PreprocessConfig
    from runtime.sampling import SamplingPolicy


class DecodeError(RuntimeError):
    """A video could not be opened or decoded; the message says which file and why."""


@dataclass(frozen=True)
class DecodedVideo:
    """Sampled frames of one video, preprocessed for the model.

    Attributes:
        info: stream facts.
        images: uint8 (K, 3, H, W) model input, one per sample (per (sample, view) with ``views``), in time order.
        intervals: float64 (K, 2) [start, end) seconds each row's sample stands for.
        decode_seconds: wall time spent decoding and preprocessing.
        backend: name of the decoder that produced it (``pyav``, ``nvdec``...).
        decode_mode: how the decoder reconstructed the stream (``full``, ``nonref``, ``keyframes``...;
            see ``runtime.decode.pyav.DECODE_MODES``).
        max_time_error: worst |requested sample time - time of the frame used| in seconds (None = not measured).
        views: int16 (K,) which layout view of its window each row is (``PyAVDecoder.decode(..., layout=...)``;
            the rows of one sample are consecutive and share its interval); None = one whole frame per sample.
        layout: the video's layout decisions (one per time window) as a JSON-able record, None = not analysed.
        windows: int32 (K,) the layout time window of each row (Note [Layout windows] in
            ``runtime/preprocess/layout.py``); None whenever ``views`` is None.
    """

    info: VideoInfo
    images: np.ndarray
    intervals: np.ndarray
    decode_seconds: float
    backend: str
    decode_mode: str = "full"
    max_time_error: float | None = None
    views: np.ndarray | None = None
    layout: dict[str, Any] | None = None
    windows: np.ndarray | None = None


class Decoder(Protocol):
    """Decodes a file, keeping only the frames the sampling policy selects."""

    name: str

    def probe(self, path: str | Path) -> VideoInfo:
        """Read stream facts without decoding frames."""
        ...

    def decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig) -> DecodedVideo:
        """Decode, sample and preprocess one video. Raises DecodeError on failure."""
        ...


@dataclass(frozen=True)
class VideoPlan:
    """What a decode session will produce for one video.

    Attributes:
        info: stream facts.
        intervals: float64 (K, 2) [start, end) seconds per sample, in time order.
        decoder: name of the decoder that produces the frames (``nvdec``, ``pyav``...).
        notes: remarks, e.g. why NVDEC fell back to the CPU decoder.
        decode_mode: how the frames were decoded (see ``DecodedVideo.decode_mode``).
        max_time_error: worst sample timing error in seconds, None = not measured.
        views: int16 (K,) layout view of each row (see ``DecodedVideo.views``), None = whole frames only.
        layout: the layout decision record (see ``DecodedVideo.layout``), None = not analysed.
        sampled: samples decoded before pre-selection kept ``intervals`` of them (``runtime.preprocess.preselect``),
            None = no pre-selection.
        windows: int32 (K,) layout time window of each row (see ``DecodedVideo.windows``), None = not windowed.
        inputs: uint8 (K, 3, H, W) host model inputs of the rows, kept for a stage after inference (the
            orientation probe of the layout views: ``runtime/pipeline/turned_views.py``); None = not kept.
    """

    info: VideoInfo
    intervals: np.ndarray
    decoder: str
    notes: tuple[str, ...] = ()
    decode_mode: str = "full"
    max_time_error: float | None = None
    views: np.ndarray | None = None
    layout: dict[str, Any] | None = None
    sampled: int | None = None
    windows: np.ndarray | None = None
    inputs: np.ndarray | None = None


SlotWriter = Callable[[Any, int, Any], None]
"""``writer(batch_buffer, slot, stream)`` enqueues one preprocessed frame into a batch slot."""


class FrameSink(Protocol):
    """Where a decode session puts one video's frames."""

    def start(self, plan: VideoPlan) -> None:
        """Announce the samples; calling it again restarts the video (earlier frames are dropped)."""
        ...

    def write(self, sample: int, writer: SlotWriter) -> None:
        """Write sample ``sample`` (0 <= sample < K) through ``writer``; blocks while no slot is free."""
        ...


class DecodeSession(Protocol):
    """One decoder instance; used by a single worker thread at a time.

    Attributes:
        name: decoder name for logs.
        stream: the stream its writes are enqueued on (None on the host).
    """

    name: str
    stream: Any

    def decode_into(self, path: str, sink: FrameSink) -> None:
        """Decode ``path``: call ``sink.start(plan)``, then ``sink.write`` once per sample it could decode."""
        ...

    def close(self) -> None: ...
