"""Host building blocks of the pipeline: any ``Decoder`` as a decode session, any ``InferenceBackend`` as a batch engine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.decode.base import FrameSink, VideoPlan
from runtime.device.base import DeviceOps
from runtime.preprocess.preselect import preselect as preselect_frames


@dataclass
class _DonePending:
    result: np.ndarray
    busy_seconds: float

    def wait(self) -> np.ndarray:
        return self.result


class BackendEngine:
    """A ``BatchEngine`` over an activated ``InferenceBackend`` and host batches (runs in ``submit``).

    Args:
        backend: e.g. ``OnnxRuntimeBackend`` (activated here if it is not yet).
        max_batch: batch size the pipeline fills.
    """

    def __init__(self, backend: Any, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend.activate()
        self.max_batch = max_batch
        self.output_dim = int(backend.output_dim)

    def submit(self, buffer: np.ndarray, count: int, wait_events: list[Any]) -> _DonePending:
        start = time.perf_counter()
        out = self.backend.infer(buffer[:count])
        return _DonePending(np.array(out, dtype=np.float32), time.perf_counter() - start)


class HostDecodeSession:
    """Any ``Decoder`` (e.g. ``PyAVDecoder``) as a decode session: decode, then upload each row.

    Args:
        decoder: the decoder.
        policy: sampling policy.
        preprocess: preprocessing config.
        ops: the pipeline's device ops (host arrays or CUDA).
        stream: stream the uploads are enqueued on.
        layout: ``LayoutSettings``: also embed each sample's layout views (a decoder with a ``layout``
            option of ``decode``: ``PyAVDecoder``); every (sample, view) row is written and the plan
            carries the rows' views, windows and the layout decisions. None = whole frames.
        preselect: ``PreselectConfig``: embed only the samples ``preselect`` keeps (Note [Pre-selection] in
            runtime/preprocess/preselect.py; whole frames only); the plan records how many were sampled. None = all.
        keep_inputs_bytes: the plan carries the rows' model inputs (``VideoPlan.inputs``) for a stage after
            inference when they take at most this many bytes (0 = never); a longer video's plan says why not in ``notes``.
    """

    def __init__(self, decoder: Any, policy: Any, preprocess: Any, ops: DeviceOps, stream: Any = None, layout: Any = None,
                 preselect: Any = None, keep_inputs_bytes: int = 0) -> None:
        if preselect is not None and layout is not None:
            raise ValueError("pre-selection (--preselect-margin) applies to whole frames only, not with layout views")
        self.decoder = decoder
        self.name = decoder.name
        self.policy = policy
        self.preprocess = preprocess
        self.ops = ops
        self.stream = stream
        self.layout = layout
        self.preselect = preselect
        self.keep_inputs_bytes = keep_inputs_bytes

    def decode_into(self, path: str, sink: FrameSink) -> None:
        if self.layout is None:
            decoded = self.decoder.decode(path, self.policy, self.preprocess)
        else:
            decoded = self.decoder.decode(path, self.policy, self.preprocess, layout=self.layout)
        images, intervals, sampled = decoded.images, decoded.intervals, None
        if self.preselect is not None:
            keep = preselect_frames(images, intervals, decoded.info.duration, self.preselect)
            images, intervals, sampled = images[keep], intervals[keep], len(decoded.intervals)
        keep = 0 < images.nbytes <= self.keep_inputs_bytes
        notes = () if keep or not self.keep_inputs_bytes else (
            f"model inputs not kept for the orientation probe: {images.nbytes} bytes, over the cap of {self.keep_inputs_bytes}",)
        sink.start(VideoPlan(decoded.info, intervals, decoded.backend, notes=notes, decode_mode=decoded.decode_mode,
                             max_time_error=decoded.max_time_error, views=decoded.views, layout=decoded.layout, sampled=sampled,
                             windows=decoded.windows, inputs=images if keep else None))
        for k in range(images.shape[0]):
            image = images[k]
            sink.write(k, lambda buffer, slot, stream, image=image: self.ops.upload(image, buffer, slot, stream))

    def close(self) -> None:
        pass
