"""CPU decoder on PyAV (FFmpeg): threaded decoding, reconstructing and converting only what the sampler needs.

Decoding runs in two passes over the file: a demux-only pass reads packet timestamps and
frame types (cheap: no decoding), the C++ sampler picks the frames to keep, and a decode
pass then preprocesses only those frames. yuv420p frames go straight from their planes into
the C++ resizer (no swscale RGB conversion); other pixel formats are converted to RGB first.

Note [Frame keys]: both passes name a frame by its integer pts (never by float seconds, which
the two passes would round differently), or by its decode-output index when the stream has no
timestamps (raw ``.h264``); index keys are only valid when every frame is decoded, so such
streams always decode in ``full`` mode. The timeout is checked in every pass.

Note [Decode modes]: the sampler wants ~2 frames/s out of 25-60, so FFmpeg may skip work:
``nonref`` (``skip_frame=NONREF``: frames no other frame references, e.g. most B-frames, are
not reconstructed), ``noloop`` (``skip_loop_filter=all``: no deblocking; every frame still
decoded, times exact, pixels differ slightly), ``nonref-noloop`` (both), ``keyframes``
(``skip_frame=NONKEY``). Which frames a mode outputs is known from the demux pass (packet key
flags; H.264/HEVC NAL headers for references, ``runtime.decode.nal``), so the sampler chooses
among those frames only, records the worst timing error against the requested sample times, and
the descriptors keep the real frame times (Note [Real frame times in skip modes] in
``runtime/sampling.py``). ``auto`` takes ``keyframes`` for very long videos or when a full decode
would exceed the per-video time budget, and otherwise the cheapest mode whose timing error stays
within the sampler's tolerance (``runtime.sampling.timing_tolerance``). A skip mode that loses a
frame it was expected to output is redone in ``full``.

With ``decode(..., layout=settings)`` the decode pass also keeps what the layout views need
(``runtime/decode/layout_capture.py``) and the result has one row per (sample, view of its window).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from runtime.decode.base import DecodedVideo, DecodeError
from runtime.decode.layout_capture import LayoutCapture, plane_view
from runtime.decode.nal import NAL_PARSERS, nal_length_size
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.cpu import preprocess_rgb, preprocess_yuv420p
from runtime.preprocess.layout import LayoutSettings, turn_images
from runtime.records import VideoInfo
from runtime.sampling import (
    FrameSelection,
    SamplingPolicy,
    select_decodable_frames,
    timing_tolerance,
)

logger = logging.getLogger(__name__)

# Limited-range 4:2:0 can go through the fused C++ YUV path; full-range (yuvj) and
# anything else goes through FFmpeg's RGB conversion.
_FAST_PIXEL_FORMATS = frozenset({"yuv420p"})
_MAX_FRAMES_PER_BATCH = 64
_DEADLINE_CHECK_EVERY = 64  # packets/frames between timeout checks in the timestamp passes

DECODE_MODES = ("full", "noloop", "nonref", "nonref-noloop", "keyframes", "auto")
_SKIP_FRAME = {"full": None, "noloop": None, "nonref": "NONREF", "nonref-noloop": "NONREF", "keyframes": "NONKEY"}
_NO_LOOP_FILTER = frozenset({"noloop", "nonref-noloop"})
# auto's order of preference (cheapest first); "noloop" meets any timing tolerance.
_AUTO_CANDIDATES = ("keyframes", "nonref-noloop", "noloop")
# Conservative full-decode cost for auto's time-budget estimate (seconds per decoded megapixel,
# one core; H.264 here decodes at ~4 ms/MP, HEVC/VP9 are slower).
_SECONDS_PER_MEGAPIXEL = 0.01

def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{path}: not a readable video container ({type(exc).__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise DecodeError(f"{path}: no video stream (streams: {[s.type for s in container.streams]})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        tag = getattr(stream, "codec_tag", None) or "unknown"
        container.close()
        raise DecodeError(f"{path}: no decoder for the video codec (codec tag {tag!r})")
    return container


def _frame_rate(stream: av.video.stream.VideoStream) -> float:
    """Frames per second for timing frames without timestamps: the stream's own rate (e.g. an H.264
    SPS's timing info) before the container's average, which raw demuxers set to a default of 25."""
    for rate in (stream.codec_context.framerate, stream.guessed_rate, stream.average_rate):
        if rate:
            return float(rate)
    return 25.0  # FFmpeg's own guess when nothing says otherwise


# A corrupt packet costs its own frames, not the video: decoding goes on after up to this many.
_MAX_CORRUPT_PACKETS = 64


def _decode_frames(path: str | Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream``, skipping packets the decoder rejects as invalid data."""
    corrupt = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError as exc:
            corrupt += 1
            if corrupt > _MAX_CORRUPT_PACKETS:
                raise DecodeError(f"{path}: more than {_MAX_CORRUPT_PACKETS} corrupt packets (last: {exc})") from exc
            logger.debug("%s: skipping a corrupt packet (%s)", path, exc)
            continue
        yield from frames
    if corrupt:
        logger.warning("%s: skipped %d corrupt packet(s)", path, corrupt)


def _stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _normalize_rotation(degrees: float | int | None) -> int:
    """Counter-clockwise rotation to apply for display, as a multiple of 90 in [0, 360)."""
    if not degrees:
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


@dataclass(frozen=True)
class _StreamIndex:
    """What the timestamp pass learned about a stream (one entry per frame, decode order).

    Attributes:
        keys: frame keys (Note [Frame keys]).
        times: presentation times in seconds.
        keyframe: packet key flags (None when the times came from a decode pass).
        reference: whether each frame is referenced by others (None = unknown for this codec).
        index_keys: keys are decode-output indices (the stream has no timestamps).
    """

    keys: list[int]
    times: np.ndarray
    keyframe: np.ndarray | None
    reference: np.ndarray | None
    index_keys: bool
    frame_rate: float | None = None  # the rate index-keyed frames are timed at

    def effective_mode(self, mode: str) -> str:
        """``mode`` without its frame skipping when this stream's output under it cannot be
        predicted (index keys; references of a codec without a NAL parser)."""
        skip = _SKIP_FRAME[mode]
        if skip is None:
            return mode
        known = self.keyframe if skip == "NONKEY" else self.reference
        if self.index_keys or known is None:
            return "noloop" if mode in _NO_LOOP_FILTER else "full"
        return mode

    def decodable(self, mode: str) -> np.ndarray | None:
        """Which frames ``mode`` outputs; None = all."""
        skip = _SKIP_FRAME[self.effective_mode(mode)]
        if skip is None:
            return None
        mask = self.keyframe if skip == "NONKEY" else self.reference | self.keyframe
        return None if mask.all() else mask


class PyAVDecoder:
    """Decoder backend on PyAV.

    Args:
        thread_count: FFmpeg decoding threads (0 = FFmpeg's choice).
        timeout_seconds: give up on a video whose decoding (all passes) takes longer than this.
        mode: one of ``DECODE_MODES`` (Note [Decode modes]).
        max_time_error: timing tolerance in seconds for ``auto`` (None = ``timing_tolerance(policy)``).
        long_video_seconds: ``auto`` decodes keyframes only from this duration on.
        time_budget_seconds: ``auto`` decodes keyframes only when a full decode is estimated to
            take longer than this (None = half of ``timeout_seconds``, or no budget).
        layout_capture_bytes: with layout views, the most bytes of native planes kept per video;
            a video beyond it gets its views from a second decode pass (``runtime.decode.layout_capture``).
    """

    name = "pyav"

    def __init__(
        self,
        thread_count: int = 0,
        timeout_seconds: float | None = None,
        mode: str = "full",
        max_time_error: float | None = None,
        long_video_seconds: float = 1800.0,
        time_budget_seconds: float | None = None,
        layout_capture_bytes: int = 256 << 20,
    ) -> None:
        if mode not in DECODE_MODES:
            raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {mode!r}")
        if max_time_error is not None and not max_time_error >= 0:
            raise ValueError(f"max_time_error must be >= 0 seconds or None, got {max_time_error!r}")
        self.thread_count = thread_count
        self.timeout_seconds = timeout_seconds
        self.mode = mode
        self.max_time_error = max_time_error
        self.long_video_seconds = long_video_seconds
        self.time_budget_seconds = time_budget_seconds
        self.layout_capture_bytes = layout_capture_bytes

    def probe(self, path: str | Path) -> VideoInfo:
        """Read stream facts (decodes only the first frame, for the rotation)."""
        with _open(path) as container:
            stream = container.streams.video[0]
            rotation = 0
            try:
                for frame in _decode_frames(path, container, stream):
                    rotation = _normalize_rotation(getattr(frame, "rotation", 0))
                    break
            except av.FFmpegError as exc:
                raise DecodeError(f"{path}: cannot decode the first frame ({exc})") from exc
            return self._info(path, container, stream, rotation)

    def _info(self, path: str | Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream, rotation: int) -> VideoInfo:
        ctx = stream.codec_context
        return VideoInfo(
            path=str(path),
            duration=_stream_duration(container, stream),
            fps=float(stream.average_rate) if stream.average_rate else 0.0,
            width=int(ctx.width),
            height=int(ctx.height),
            codec=ctx.name,
            rotation=rotation,
            num_frames=int(stream.frames) or None,
            pixel_format=ctx.pix_fmt,
        )

    def _check_deadline(self, path: str | Path, start: float) -> None:
        if self.timeout_seconds is not None and time.perf_counter() - start > self.timeout_seconds:
            raise DecodeError(f"{path}: decoding exceeded the timeout of {self.timeout_seconds:.1f} s")

    def _demux_index(self, path: str | Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                     start: float) -> _StreamIndex | None:
        """Packet pts, key flags and reference flags (demux only); None when packets lack pts."""
        keys: list[int] = []
        keyframe: list[bool] = []
        reference: list[bool] | None = [] if stream.codec_context.name in NAL_PARSERS else None
        parse = NAL_PARSERS.get(stream.codec_context.name)
        length_size = nal_length_size(stream.codec_context.name, stream.codec_context.extradata)
        for count, packet in enumerate(container.demux(stream)):
            if count % _DEADLINE_CHECK_EVERY == 0:
                self._check_deadline(path, start)
            if packet.size == 0 or packet.is_discard:
                continue  # flush packet, or one the decoder drops (e.g. before an edit list's start)
            if packet.pts is None:
                return None
            keys.append(int(packet.pts))
            keyframe.append(bool(packet.is_keyframe))
            if reference is not None and parse is not None:
                reference.append(parse(bytes(packet), length_size))
        time_base = float(stream.time_base)
        return _StreamIndex(keys, np.asarray(keys, dtype=np.float64) * time_base, np.asarray(keyframe, dtype=bool),
                            None if reference is None else np.asarray(reference, dtype=bool), index_keys=False)

    def _decoded_index(self, path: str | Path, start: float) -> _StreamIndex:
        """Frame keys and times from a full decode pass (for streams without packet pts)."""
        with _open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base = float(stream.time_base) if stream.time_base else 0.0
            rate = _frame_rate(stream)
            keys: list[int] = []
            times: list[float] = []
            index_keys = False
            for index, frame in enumerate(_decode_frames(path, container, stream)):
                if index % _DEADLINE_CHECK_EVERY == 0:
                    self._check_deadline(path, start)
                key, seconds, by_index = _frame_key(frame, index, time_base, rate)
                index_keys |= by_index
                keys.append(key)
                times.append(seconds)
        return _StreamIndex(keys, np.asarray(times, dtype=np.float64), None, None, index_keys=index_keys, frame_rate=rate)

    def decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig,
               layout: LayoutSettings | None = None) -> DecodedVideo:
        """Decode, sample and preprocess one video.

        Args:
            path: the video file.
            policy: which frames to sample.
            preprocess: the model input contract.
            layout: also decide the video's layout views and return one row per (sample, view)
                (Note [Layout rows] in ``runtime/decode/layout_capture.py``); None = whole frames.

        Returns:
            The model inputs; with ``layout``, ``views`` and ``windows`` (None for a plain video) and
            ``layout`` are set.

        Raises:
            DecodeError: missing/empty/corrupt file, no video stream, no decodable frame, timeout.
        """
        start = time.perf_counter()
        try:
            return self._decode(path, policy, preprocess, start, layout)
        except av.FFmpegError as exc:
            raise DecodeError(f"{path}: decoding failed ({type(exc).__name__}: {exc})") from exc

    def _decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig, start: float,
                layout: LayoutSettings | None) -> DecodedVideo:
        with _open(path) as container:
            stream = container.streams.video[0]
            duration = _stream_duration(container, stream)
            pixels = int(stream.codec_context.width or 0) * int(stream.codec_context.height or 0)
            index = self._demux_index(path, container, stream, start)
        if index is None:
            index = self._decoded_index(path, start)
        if not index.keys:
            raise DecodeError(f"{path}: the video stream has no frames")
        if index.index_keys and index.frame_rate:
            duration = len(index.keys) / index.frame_rate  # no timestamps: the container's duration is a guess
        mode, selection, error = self._plan(index, policy, duration if duration > 0 else None, pixels)
        capture = None if layout is None else LayoutCapture(layout, len(selection), self.layout_capture_bytes)
        images, info = self._decode_selected(path, index, selection, mode, preprocess, start, capture)
        if mode != "full" and any(image is None for image in images):
            logger.debug("%s: decode mode %s lost frames it was expected to output; decoding again in full", path, mode)
            mode = "full"
            selection, error = select_decodable_frames(index.times, policy, duration if duration > 0 else None)
            capture = None if layout is None else LayoutCapture(layout, len(selection), self.layout_capture_bytes)
            images, info = self._decode_selected(path, index, selection, mode, preprocess, start, capture)
        if info is None:
            raise DecodeError(f"{path}: no frame could be decoded")
        kept = [k for k, image in enumerate(images) if image is not None]
        if not kept:
            raise DecodeError(f"{path}: none of the {len(selection)} sampled frames could be decoded")
        if len(kept) < len(images):
            logger.warning("%s: %d of %d sampled frames were not decoded (truncated or corrupt stream)", path, len(images) - len(kept), len(images))
        batch, intervals = np.stack([images[k] for k in kept]), selection.intervals[kept]
        views = windows = record = None
        if capture is not None:
            batch, intervals, views, windows, record = capture.finish(
                str(path), kept, info.width, info.height, batch, selection.intervals, preprocess,
                second_pass=lambda cutter: self._decode_selected(path, index, selection, mode, preprocess, start, convert=cutter)[0])
        return DecodedVideo(
            info=info,
            images=batch,
            intervals=intervals,
            decode_seconds=time.perf_counter() - start,
            backend=self.name,
            decode_mode=mode,
            max_time_error=error,
            views=views,
            layout=record,
            windows=windows,
        )

    def _plan(self, index: _StreamIndex, policy: SamplingPolicy, duration: float | None, pixels: int) -> tuple[str, FrameSelection, float]:
        """The decode mode actually used, its selection and its worst timing error."""
        if self.mode != "auto":
            mode = index.effective_mode(self.mode)
            decodable = index.decodable(mode)
            if decodable is not None and not decodable.any():
                mode, decodable = "full", None  # the mode would output nothing (e.g. keyframes only in a discarded pre-roll)
            return (mode, *select_decodable_frames(index.times, policy, duration, decodable))
        length = duration if duration is not None else float(np.ptp(index.times[np.isfinite(index.times)])) if index.times.size else 0.0
        budget = self.time_budget_seconds
        if budget is None and self.timeout_seconds is not None:
            budget = 0.5 * self.timeout_seconds
        estimate = len(index.keys) * pixels / 1e6 * _SECONDS_PER_MEGAPIXEL
        keyframes_usable = index.keyframe is not None and bool(index.keyframe.any())
        if keyframes_usable and not index.index_keys and (length >= self.long_video_seconds or (budget is not None and estimate > budget)):
            return ("keyframes", *select_decodable_frames(index.times, policy, duration, index.decodable("keyframes")))
        tolerance = timing_tolerance(policy) if self.max_time_error is None else self.max_time_error
        for mode in _AUTO_CANDIDATES:
            if index.effective_mode(mode) != mode:
                continue  # this mode's output cannot be predicted for this stream
            decodable = index.decodable(mode)
            if decodable is not None and not decodable.any():
                continue  # e.g. every keyframe sits in the pre-roll an edit list discards
            selection, error = select_decodable_frames(index.times, policy, duration, decodable)
            if error <= tolerance or mode == _AUTO_CANDIDATES[-1]:
                return mode, selection, error
        raise AssertionError("unreachable: the last auto candidate is always accepted")

    def _decode_selected(self, path: str | Path, index: _StreamIndex, selection: FrameSelection, mode: str,
                         preprocess: PreprocessConfig, start: float, capture: LayoutCapture | None = None,
                         convert: Callable[[list[tuple[int, av.VideoFrame]], list[Any], int], None] | None = None,
                         ) -> tuple[list[Any], VideoInfo | None]:
        """The decode pass: preprocess the selected frames, matched by key (Note [Frame keys]).

        ``capture`` also keeps the converted frames' planes; ``convert(pending, images, rotation)``
        replaces the conversion (the layout views' second pass).
        """
        if convert is None:
            def convert(pending: list[tuple[int, av.VideoFrame]], images: list[Any], rotation: int) -> None:
                self._convert(pending, images, preprocess, rotation)
                if capture is not None:
                    capture.keep(pending, rotation)

        # Wanted frames by key; duplicate keys resolve to the first frame decoded.
        wanted: dict[int, int] = {}
        for k, i in enumerate(selection.indices):
            wanted.setdefault(index.keys[int(i)], k)
        images: list[np.ndarray | None] = [None] * len(selection)
        rotation = 0
        info = None
        with _open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.thread_count:
                stream.codec_context.thread_count = self.thread_count
            if _SKIP_FRAME[mode] is not None:
                stream.codec_context.skip_frame = _SKIP_FRAME[mode]
            if mode in _NO_LOOP_FILTER:
                stream.codec_context.options = {**stream.codec_context.options, "skip_loop_filter": "all"}
            time_base = float(stream.time_base) if stream.time_base else 0.0
            rate = _frame_rate(stream)
            pending: list[tuple[int, av.VideoFrame]] = []
            for output_index, frame in enumerate(_decode_frames(path, container, stream)):
                if info is None:
                    rotation = _normalize_rotation(getattr(frame, "rotation", 0))
                    info = self._info(path, container, stream, rotation)
                self._check_deadline(path, start)
                key, _, by_index = _frame_key(frame, output_index, time_base, rate)
                if by_index != index.index_keys:
                    continue  # a frame keyed differently from the timestamp pass cannot be matched
                slot = wanted.pop(key, None)
                if slot is None:
                    continue
                pending.append((slot, frame))
                if len(pending) >= _MAX_FRAMES_PER_BATCH:
                    convert(pending, images, rotation)
                    pending = []
                if not wanted:
                    break
            convert(pending, images, rotation)
        return images, info

    @staticmethod
    def _convert(pending: list[tuple[int, av.VideoFrame]], images: list[np.ndarray | None], preprocess: PreprocessConfig, rotation: int) -> None:
        """Preprocess frames in one batched C++ call per pixel-format group."""
        if not pending:
            return
        config = preprocess
        if rotation in (90, 270):  # resize into the transposed size, then rotate
            config = PreprocessConfig(**{**preprocess.__dict__, "height": preprocess.width, "width": preprocess.height})
        fast = [(slot, f) for slot, f in pending if f.format.name in _FAST_PIXEL_FORMATS]
        slow = [(slot, f) for slot, f in pending if f.format.name not in _FAST_PIXEL_FORMATS]
        groups: list[tuple[list[int], np.ndarray]] = []
        for shape in sorted({(f.height, f.width) for _, f in fast}):
            same = [(slot, f) for slot, f in fast if (f.height, f.width) == shape]
            y, u, v = (np.stack([plane_view(f, p) for _, f in same]) for p in range(3))
            groups.append(([slot for slot, _ in same], preprocess_yuv420p(y, u, v, config)))
        for shape in sorted({(f.height, f.width) for _, f in slow}):
            same = [(slot, f) for slot, f in slow if (f.height, f.width) == shape]
            rgb = np.stack([f.to_ndarray(format="rgb24") for _, f in same])
            groups.append(([slot for slot, _ in same], preprocess_rgb(rgb, config)))
        for slots, batch in groups:
            batch = turn_images(batch, rotation // 90)
            for slot, image in zip(slots, batch):
                images[slot] = image


def _frame_key(frame: av.VideoFrame, index: int, time_base: float, rate: float) -> tuple[int, float, bool]:
    """(key, seconds, keyed by index) of a decoded frame (Note [Frame keys])."""
    if frame.pts is not None:
        return int(frame.pts), frame.pts * time_base, False
    return index, index / rate, True
