"""CPU decoder on PyAV (FFmpeg): threaded decoding, converting only the sampled frames.

Decoding runs in two passes over the file: a demux-only pass reads packet timestamps
(cheap: no decoding), the C++ sampler picks the frames to keep, and a decode pass then
preprocesses only those frames. yuv420p frames go straight from their planes into the
C++ resizer (no swscale RGB conversion); other pixel formats are converted to RGB first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import av
import numpy as np

from runtime.decode.base import DecodedVideo, DecodeError
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.cpu import preprocess_rgb, preprocess_yuv420p
from runtime.records import VideoInfo
from runtime.sampling import SamplingPolicy, select_frames

logger = logging.getLogger(__name__)

# Limited-range 4:2:0 can go through the fused C++ YUV path; full-range (yuvj) and
# anything else goes through FFmpeg's RGB conversion.
_FAST_PIXEL_FORMATS = frozenset({"yuv420p"})
_MAX_FRAMES_PER_BATCH = 64


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
    return container


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


class PyAVDecoder:
    """Decoder backend on PyAV.

    Args:
        thread_count: FFmpeg decoding threads (0 = FFmpeg's choice).
        timeout_seconds: give up on a video whose decoding takes longer than this.
    """

    name = "pyav"

    def __init__(self, thread_count: int = 0, timeout_seconds: float | None = None) -> None:
        self.thread_count = thread_count
        self.timeout_seconds = timeout_seconds

    def probe(self, path: str | Path) -> VideoInfo:
        """Read stream facts (decodes only the first frame, for the rotation)."""
        with _open(path) as container:
            stream = container.streams.video[0]
            rotation = 0
            try:
                for frame in container.decode(stream):
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

    def _presentation_times(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list[float] | None:
        """Packet pts in seconds (demux only); None when the container lacks them."""
        times: list[float] = []
        time_base = float(stream.time_base)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # flush packet
            if packet.pts is None:
                return None
            times.append(packet.pts * time_base)
        return times

    def _decoded_times(self, path: str | Path) -> list[float]:
        """Frame times from a full decode pass (for containers without packet pts)."""
        with _open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            times: list[float] = []
            for index, frame in enumerate(container.decode(stream)):
                times.append(frame.time if frame.time is not None else float(index))
            return times

    def decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig) -> DecodedVideo:
        """Decode, sample and preprocess one video.

        Raises:
            DecodeError: missing/empty/corrupt file, no video stream, no decodable frame, timeout.
        """
        start = time.perf_counter()
        try:
            return self._decode(path, policy, preprocess, start)
        except av.FFmpegError as exc:
            raise DecodeError(f"{path}: decoding failed ({type(exc).__name__}: {exc})") from exc

    def _decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig, start: float) -> DecodedVideo:
        with _open(path) as container:
            stream = container.streams.video[0]
            duration = _stream_duration(container, stream)
            pts = self._presentation_times(container, stream)
        if pts is None:
            pts = self._decoded_times(path)
        if not pts:
            raise DecodeError(f"{path}: the video stream has no frames")
        pts_array = np.asarray(pts, dtype=np.float64)
        selection = select_frames(pts_array, policy, duration if duration > 0 else None)
        # Wanted frames by pts value; duplicate pts resolve to the first frame decoded.
        wanted = {float(pts_array[i]): k for k, i in enumerate(selection.indices)}
        images: list[np.ndarray | None] = [None] * len(selection)
        rotation = 0
        with _open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.thread_count:
                stream.codec_context.thread_count = self.thread_count
            info = None
            pending: list[tuple[int, av.VideoFrame]] = []
            for frame in container.decode(stream):
                if info is None:
                    rotation = _normalize_rotation(getattr(frame, "rotation", 0))
                    info = self._info(path, container, stream, rotation)
                if self.timeout_seconds is not None and time.perf_counter() - start > self.timeout_seconds:
                    raise DecodeError(f"{path}: decoding exceeded the timeout of {self.timeout_seconds:.1f} s")
                if frame.pts is None:
                    continue
                slot = wanted.pop(frame.pts * float(stream.time_base), None)
                if slot is None:
                    continue
                pending.append((slot, frame))
                if len(pending) >= _MAX_FRAMES_PER_BATCH:
                    self._convert(pending, images, preprocess, rotation)
                    pending = []
                if not wanted:
                    break
            self._convert(pending, images, preprocess, rotation)
        if info is None:
            raise DecodeError(f"{path}: no frame could be decoded")
        kept = [k for k, image in enumerate(images) if image is not None]
        if not kept:
            raise DecodeError(f"{path}: none of the {len(selection)} sampled frames could be decoded")
        if len(kept) < len(images):
            logger.warning("%s: %d of %d sampled frames were not decoded (truncated or corrupt stream)", path, len(images) - len(kept), len(images))
        batch = np.stack([images[k] for k in kept])
        return DecodedVideo(
            info=info,
            images=batch,
            intervals=selection.intervals[kept],
            decode_seconds=time.perf_counter() - start,
            backend=self.name,
        )

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
            y, u, v = (np.stack([_plane(f, p) for _, f in same]) for p in range(3))
            groups.append(([slot for slot, _ in same], preprocess_yuv420p(y, u, v, config)))
        for shape in sorted({(f.height, f.width) for _, f in slow}):
            same = [(slot, f) for slot, f in slow if (f.height, f.width) == shape]
            rgb = np.stack([f.to_ndarray(format="rgb24") for _, f in same])
            groups.append(([slot for slot, _ in same], preprocess_rgb(rgb, config)))
        for slots, batch in groups:
            if rotation:
                batch = np.ascontiguousarray(np.rot90(batch, k=rotation // 90, axes=(2, 3)))
            for slot, image in zip(slots, batch):
                images[slot] = image


def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    plane = frame.planes[index]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]

