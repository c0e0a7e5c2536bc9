"""NVDEC decoder (PyNvVideoCodec): frames stay in device memory and go straight to the CUDA resizer.

Per video: PyAV reads the stream facts (``PyAVDecoder.probe``) and, in a demux-only pass,
the packet timestamps; the C++ sampler picks the frames (``select_frames``); then
PyNvVideoCodec demuxes and decodes sequentially and only the selected frames are
converted (NV12 -> resized planar RGB, ``runtime.preprocess.cuda``) into their batch
slots, on the session's CUDA stream. Decoding stops as soon as every selected frame is out.

Fallback: a stream NVDEC cannot take (``nvdec_fallback_reason``: codec, size, bit depth,
chroma format, full-range colour) or any NVDEC error is decoded by the CPU decoder instead;
the reason is recorded in the plan's notes (``VideoEmbeddings.notes``) and the decoder name
(``pyav``).

Note [Frame lifetime]
---------------------
PyNvVideoCodec hands out frames that live in the decoder's own buffers, which a later
``Decode`` call may overwrite. The decoder is created on the session's stream, so its copy
into those buffers, our kernel reading them, and the next ``Decode``'s copy are ordered by
that one stream: no synchronisation is needed for correctness.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.decode.base import DecodedVideo, DecodeError
from runtime.preprocess.config import PreprocessConfig
from runtime.records import VideoInfo
from runtime.sampling import SamplingPolicy, select_frames

logger = logging.getLogger(__name__)

# FFmpeg codec name -> largest side NVDEC decodes (Ampere/Hopper NVDEC limits).
NVDEC_CODECS: dict[str, int] = {
    "h264": 4096,
    "hevc": 8192,
    "vp9": 8192,
    "av1": 8192,
    "vp8": 4096,
    "mpeg1video": 4080,
    "mpeg2video": 4080,
    "mpeg4": 2032,
    "vc1": 2048,
}
MIN_WIDTH, MIN_HEIGHT = 48, 16
# 8-bit 4:2:0 limited range: what the NV12 kernel converts like the CPU path.
NVDEC_PIXEL_FORMATS = frozenset({"yuv420p", "nv12"})


def nvdec_fallback_reason(info: VideoInfo) -> str | None:
    """Why NVDEC (with our NV12 kernel) should not decode this stream, or None if it can.

    Args:
        info: stream facts from ``PyAVDecoder.probe``.

    Returns:
        A short reason, e.g. ``"codec 'prores' is not decoded by NVDEC"``.
    """
    max_side = NVDEC_CODECS.get(info.codec)
    if max_side is None:
        return f"codec {info.codec!r} is not decoded by NVDEC (supported: {sorted(NVDEC_CODECS)})"
    if info.width < MIN_WIDTH or info.height < MIN_HEIGHT:
        return f"frame size {info.width}x{info.height} is below NVDEC's minimum {MIN_WIDTH}x{MIN_HEIGHT}"
    if info.width > max_side or info.height > max_side:
        return f"frame size {info.width}x{info.height} exceeds NVDEC's {max_side} limit for {info.codec}"
    if info.pixel_format not in NVDEC_PIXEL_FORMATS:
        return (
            f"pixel format {info.pixel_format!r} is not 8-bit limited-range 4:2:0 "
            f"(the GPU path converts {sorted(NVDEC_PIXEL_FORMATS)})"
        )
    return None


class _NvdecUnusable(Exception):
    """NVDEC cannot produce this video; decode it on the CPU instead."""


def _packet_ticks(path: str) -> tuple[list[int], float]:
    """Packet pts (stream time-base ticks, demux order) and the time base, without decoding."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        time_base = float(stream.time_base)
        ticks = [int(p.pts) for p in container.demux(stream) if p.size and p.pts is not None]
    return ticks, time_base


@dataclass(frozen=True)
class _FramePlanes:
    y_ptr: int
    y_pitch: int
    uv_ptr: int
    uv_pitch: int
    height: int
    width: int


def _frame_planes(frame: Any) -> _FramePlanes:
    """Device pointers, pitches and size of an NV12 ``DecodedFrame`` (CUDA array interface views)."""
    views = frame.cuda()
    if len(views) < 2:
        raise _NvdecUnusable(f"decoder output has {len(views)} plane(s), expected NV12 (2)")
    luma = views[0].__cuda_array_interface__
    chroma = views[1].__cuda_array_interface__
    if luma.get("typestr") not in ("|u1", "<u1"):
        raise _NvdecUnusable(f"decoder output is {luma.get('typestr')}, expected 8-bit NV12")
    height, width = int(luma["shape"][0]), int(luma["shape"][1])
    y_pitch = int(luma["strides"][0]) if luma.get("strides") else width
    uv_pitch = int(chroma["strides"][0]) if chroma.get("strides") else y_pitch
    return _FramePlanes(int(luma["data"][0]), y_pitch, int(chroma["data"][0]), uv_pitch, height, width)


class NvdecSession:
    """One NVDEC decode session with its own CUDA stream (one per pipeline worker thread).

    Args:
        context: ``runtime.device.cuda.CudaContext`` (current on the calling thread).
        preprocessor: ``CudaPreprocessor`` for that context.
        ops: the pipeline's ``CudaOps``.
        policy: sampling policy.
        preprocess: model input contract.
        cpu_decoder: decoder for fallbacks (default ``PyAVDecoder()``).
    """

    name = "nvdec"

    def __init__(self, context: Any, preprocessor: Any, ops: Any, policy: SamplingPolicy, preprocess: PreprocessConfig, cpu_decoder: Any = None) -> None:
        import PyNvVideoCodec

        from runtime.decode.pyav import PyAVDecoder

        self._nvc = PyNvVideoCodec
        self.context = context
        self.preprocessor = preprocessor
        self.ops = ops
        self.policy = policy
        self.preprocess = preprocess
        self.cpu_decoder = cpu_decoder if cpu_decoder is not None else PyAVDecoder()
        self.stream = ops.new_stream()

    def close(self) -> None:
        self.stream.synchronize()

    def decode_into(self, path: str, sink: Any) -> None:
        """Decode ``path`` into the sink (``runtime.decode.base.FrameSink``); see the module docstring."""
        from runtime.decode.base import VideoPlan

        info = self.cpu_decoder.probe(path)
        reason = nvdec_fallback_reason(info)
        if reason is None:
            try:
                self._decode_nvdec(path, info, sink, VideoPlan)
                return
            except _NvdecUnusable as exc:
                reason = str(exc)
            except DecodeError:
                raise
            except Exception as exc:  # noqa: BLE001 - PyNvVideoCodec raises several types
                reason = f"NVDEC error {type(exc).__name__}: {exc}"
        logger.info("%s: decoding on the CPU: %s", path, reason)
        self._decode_cpu(path, sink, f"nvdec fallback to {self.cpu_decoder.name}: {reason}", VideoPlan)

    def _decode_cpu(self, path: str, sink: Any, note: str, plan_type: Any) -> None:
        decoded = self.cpu_decoder.decode(path, self.policy, self.preprocess)
        sink.start(plan_type(decoded.info, decoded.intervals, decoded.backend, (note,)))
        for k in range(decoded.images.shape[0]):
            image = decoded.images[k]
            sink.write(k, lambda buffer, slot, stream, image=image: self.ops.upload(image, buffer, slot, stream))

    def _decode_nvdec(self, path: str, info: VideoInfo, sink: Any, plan_type: Any) -> None:
        from runtime.preprocess.cuda import nv12_geometry

        try:
            ticks, time_base = _packet_ticks(path)
        except Exception as exc:
            raise DecodeError(f"{path}: cannot demux ({type(exc).__name__}: {exc})") from exc
        if not ticks:
            raise DecodeError(f"{path}: the video stream has no packets with timestamps")
        pts = np.asarray(ticks, dtype=np.float64) * time_base
        selection = select_frames(pts, self.policy, info.duration if info.duration > 0 else None)
        wanted: dict[int, int] = {}
        for k, i in enumerate(selection.indices):
            wanted.setdefault(ticks[int(i)], k)
        display_order = sorted(ticks)
        known = set(ticks)
        sink.start(plan_type(info, selection.intervals, self.name))
        cfg = self.preprocess

        nvc = self._nvc
        demuxer = nvc.CreateDemuxer(str(path))
        decoder = nvc.CreateDecoder(
            gpuid=self.context.device_index,
            codec=demuxer.GetNvCodecId(),
            cudacontext=self.context.handle,
            cudastream=int(self.stream.handle),
            usedevicememory=True,
        )
        output_index = 0

        def consume(frames: Any) -> bool:
            nonlocal output_index
            for frame in frames:
                planes = _frame_planes(frame)
                timestamp = int(frame.timestamp)
                # decoders output in display order; trust the timestamp when it is a packet pts
                tick = timestamp if timestamp in known else display_order[min(output_index, len(display_order) - 1)]
                output_index += 1
                k = wanted.pop(tick, None)
                if k is None:
                    continue
                geometry = nv12_geometry(planes.height, planes.width, cfg.height, cfg.width, cfg.interpolation, cfg.crop, info.rotation)

                def write(buffer: Any, slot: int, stream: Any, planes: _FramePlanes = planes, geometry: Any = geometry) -> None:
                    self.preprocessor.nv12_to_slot(
                        planes.y_ptr, planes.y_pitch, planes.uv_ptr, planes.uv_pitch, geometry, self.ops.slot_address(buffer, slot), stream
                    )

                sink.write(k, write)
                if not wanted:
                    return True
            return False

        try:
            for packet in demuxer:
                if consume(decoder.Decode(packet)):
                    return
            flush = getattr(nvc, "PacketData", None)
            if flush is not None:
                try:
                    consume(decoder.Decode(flush()))
                except Exception as exc:  # noqa: BLE001 - older builds reject an empty packet
                    logger.debug("%s: flush packet not accepted (%s)", path, exc)
            if wanted:
                logger.warning("%s: NVDEC produced %d of %d selected frames", path, len(selection) - len(wanted), len(selection))
        finally:
            # Kernels enqueued on this stream still read the decoder's frame surfaces: wait for
            # them before the decoder (and its surfaces) is released.
            self.stream.synchronize()
            del decoder


class NvdecDecoder:
    """``Decoder`` on NVDEC (name ``nvdec``); frames are preprocessed on the GPU.

    ``decode`` returns host images (the ``Decoder`` protocol); the pipeline uses
    ``session()`` instead, which writes straight into device batch buffers.

    Args:
        device: CUDA device ordinal.
        cpu_decoder: fallback decoder (default ``PyAVDecoder()``).
    """

    name = "nvdec"

    def __init__(self, device: int = 0, cpu_decoder: Any = None) -> None:
        from runtime.device.cuda import CudaContext, missing_gpu_packages

        missing = missing_gpu_packages(("pycuda", "PyNvVideoCodec"))
        if missing:
            raise DecodeError(f"nvdec: missing packages {missing}; install vcd-runtime[gpu]")
        from runtime.decode.pyav import PyAVDecoder
        from runtime.device.cuda import CudaOps
        from runtime.preprocess.cuda import CudaPreprocessor

        self.context = CudaContext.get(device)
        self.preprocessor = CudaPreprocessor(self.context)
        self.ops = CudaOps(self.context)
        self.cpu_decoder = cpu_decoder if cpu_decoder is not None else PyAVDecoder()

    def probe(self, path: str | Path) -> VideoInfo:
        return self.cpu_decoder.probe(path)

    def session(self, policy: SamplingPolicy, preprocess: PreprocessConfig, ops: Any = None) -> NvdecSession:
        """A new decode session (call from the thread that will use it, inside the context scope)."""
        return NvdecSession(self.context, self.preprocessor, ops or self.ops, policy, preprocess, self.cpu_decoder)

    def decode(self, path: str | Path, policy: SamplingPolicy, preprocess: PreprocessConfig) -> DecodedVideo:
        """Decode, sample and preprocess one video on the GPU; returns host images."""
        start = time.perf_counter()
        with self.context.scope():
            session = self.session(policy, preprocess)
            sink = _CollectSink(self.ops, (3, preprocess.height, preprocess.width), session.stream)
            session.decode_into(str(path), sink)
            session.stream.synchronize()
            if sink.plan is None or not sink.written:
                raise DecodeError(f"{path}: no frame could be decoded")
            host = np.empty((sink.count, *sink.shape), dtype=np.uint8)
            import pycuda.driver as cuda

            cuda.memcpy_dtoh(host, sink.buffer)
        keep = sorted(sink.written)
        return DecodedVideo(
            info=sink.plan.info,
            images=host[keep],
            intervals=np.asarray(sink.plan.intervals)[keep],
            decode_seconds=time.perf_counter() - start,
            backend=sink.plan.decoder,
        )


class _CollectSink:
    """FrameSink writing sample k into slot k of one device buffer (for ``NvdecDecoder.decode``)."""

    def __init__(self, ops: Any, shape: tuple[int, int, int], stream: Any) -> None:
        self.ops = ops
        self.stream = stream
        self.shape = shape
        self.plan: Any = None
        self.buffer: Any = None
        self.count = 0
        self.written: set[int] = set()

    def start(self, plan: Any) -> None:
        self.plan = plan
        self.count = len(plan.intervals)
        self.buffer = self.ops.allocate_batch(max(self.count, 1), self.shape)
        self.written = set()

    def write(self, sample: int, writer: Any) -> None:
        writer(self.buffer, sample, self.stream)
        self.written.add(sample)


__all__ = ["NVDEC_CODECS", "NVDEC_PIXEL_FORMATS", "NvdecDecoder", "NvdecSession", "nvdec_fallback_reason"]
