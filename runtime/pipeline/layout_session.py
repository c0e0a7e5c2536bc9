"""Prototype of layout-aware decoding on the host path: decode -> layout analysis -> view crops -> the scheduler.

``LayoutDecodeSession`` is a ``DecodeSession`` (``runtime.decode.base``) over its own
``LayoutPyAVDecoder``: a ``PyAVDecoder`` whose conversion step also keeps each sampled frame's
native planes (luma of up to ``max_analysis_frames`` frames for the analysis, full planes
within ``capture_bytes``). After the decode pass the session decides the video's views
(``runtime.preprocess.layout``), cuts them from the native planes (or, for a video whose planes
did not fit, from a second decode pass) and writes every (sample, view) row into the pipeline's
batches. The scheduler does not know views yet, so the decision travels in a ``LayoutRegistry``
and ``with_layouts`` attaches it to the results (``VideoEmbeddings.views`` / ``.layout``).

TODO(issue 18): move the capture into ``PyAVDecoder._convert`` (a ``views`` argument of
``decode``) and the views into ``VideoPlan``, so that the registry and the subclass go away;
see the report of issue 18 for the exact change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import av
import numpy as np

from runtime.decode.base import FrameSink, VideoPlan
from runtime.decode.pyav import PyAVDecoder, _plane
from runtime.device.base import DeviceOps
from runtime.device.host import HostOps
from runtime.pipeline.host import BackendEngine
from runtime.pipeline.scheduler import Pipeline
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.layout import (
    LayoutDecision,
    LayoutSettings,
    View,
    analysis_indices,
    analyze_video_layout,
    crop_rgb_views,
    crop_yuv420p_views,
    luma_of_rgb,
    plain_decision,
)
from runtime.records import VideoEmbeddings, VideoFailure

_YUV420P = "yuv420p"
_DEFAULT_SETTINGS = LayoutSettings()


class LayoutPyAVDecoder(PyAVDecoder):
    """``PyAVDecoder`` that keeps the sampled frames' native planes for the layout analysis.

    Not thread-safe: per-call state lives on the instance, so each session owns one.

    Args:
        settings: layout settings (``max_analysis_frames``).
        capture_bytes: most bytes of full planes kept per video; a video beyond it gets its
            views from a second decode pass.
        **kwargs: ``PyAVDecoder`` options.
    """

    def __init__(self, settings: LayoutSettings = _DEFAULT_SETTINGS, capture_bytes: int = 256 << 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.capture_bytes = capture_bytes
        self.views: tuple[View, ...] | None = None  # set: the conversion makes these views (second pass)
        self._reset()

    def _reset(self) -> None:
        self.luma: dict[int, np.ndarray] = {}
        self.planes: dict[int, tuple[str, tuple[np.ndarray, ...]]] = {}
        self.view_images: dict[int, list[np.ndarray]] = {}
        self.seen: set[int] = set()
        self.rotation = 0
        self.overflow = False
        self._bytes = 0
        self._analysed: set[int] = set()

    def _decode_selected(self, path, index, selection, mode, preprocess, start):  # type: ignore[no-untyped-def]
        self._reset()
        self._analysed = {int(i) for i in analysis_indices(len(selection), self.settings)}
        return super()._decode_selected(path, index, selection, mode, preprocess, start)

    def _convert(self, pending: list[tuple[int, av.VideoFrame]], images: list[np.ndarray | None],  # type: ignore[override]
                 preprocess: PreprocessConfig, rotation: int) -> None:
        if not pending:
            return
        self.rotation = rotation
        if self.views is not None:
            for slot, frame in pending:
                self.view_images[slot] = frame_views(_frame_planes(frame), self.views, preprocess, rotation)
                images[slot] = self.view_images[slot][0][0]
                self.seen.add(slot)
            return
        PyAVDecoder._convert(pending, images, preprocess, rotation)
        for slot, frame in pending:
            self.seen.add(slot)
            planes = _frame_planes(frame)
            if slot in self._analysed:
                self.luma[slot] = planes[1][0] if planes[0] == _YUV420P else luma_of_rgb(planes[1][0])
            size = sum(p.nbytes for p in planes[1])
            if self._bytes + size <= self.capture_bytes:
                self.planes[slot] = planes
                self._bytes += size
            else:
                self.overflow = True


def _frame_planes(frame: av.VideoFrame) -> tuple[str, tuple[np.ndarray, ...]]:
    """Copies of a frame's native planes: ("yuv420p", (y, u, v)) or ("rgb24", (rgb,))."""
    if frame.format.name == _YUV420P:
        return _YUV420P, tuple(np.array(_plane(frame, p)) for p in range(3))
    return "rgb24", (frame.to_ndarray(format="rgb24"),)


def frame_views(planes: tuple[str, tuple[np.ndarray, ...]], views: tuple[View, ...], config: PreprocessConfig,
                rotation: int) -> list[np.ndarray]:
    """Model inputs (1, 3, H, W) of each view of one frame's planes."""
    kind, arrays = planes
    if kind == _YUV420P:
        return crop_yuv420p_views(arrays[0][None], arrays[1][None], arrays[2][None], views, config, rotation)
    return crop_rgb_views(arrays[0][None], views, config, rotation)


class LayoutRegistry:
    """Per-video layout results waiting for the scheduler's output (thread-safe), by video path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[np.ndarray | None, dict[str, Any]]] = {}

    def put(self, path: str, views: np.ndarray | None, record: dict[str, Any]) -> None:
        with self._lock:
            self._entries[str(path)] = (views, record)

    def pop(self, path: str) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        with self._lock:
            return self._entries.pop(str(path), (None, None))


class LayoutDecodeSession:
    """A decode session that embeds the layout views of every sampled frame (see the module docstring).

    Args:
        policy: sampling policy.
        preprocess: the model input contract.
        ops: the pipeline's device ops.
        registry: where the per-video decisions go.
        settings: layout settings.
        decoder: its own ``LayoutPyAVDecoder`` (one per session).
        stream: stream the uploads are enqueued on.
    """

    name = "pyav+layout"

    def __init__(self, policy: Any, preprocess: PreprocessConfig, ops: DeviceOps, registry: LayoutRegistry,
                 settings: LayoutSettings = _DEFAULT_SETTINGS, decoder: LayoutPyAVDecoder | None = None, stream: Any = None) -> None:
        self.policy = policy
        self.preprocess = preprocess
        self.ops = ops
        self.registry = registry
        self.settings = settings
        self.decoder = decoder if decoder is not None else LayoutPyAVDecoder(settings)
        self.stream = stream

    def decode_into(self, path: str, sink: FrameSink) -> None:
        decoder = self.decoder
        decoder.views = None
        decoded = decoder.decode(path, self.policy, self.preprocess)
        kept = sorted(decoder.seen)
        if len(kept) != len(decoded.images):
            raise RuntimeError(f"{path}: layout capture saw {len(kept)} frames, the decoder kept {len(decoded.images)}")
        start = time.perf_counter()
        decision = self._decide(decoder, kept, decoded.info.width, decoded.info.height)
        analysis_seconds = time.perf_counter() - start
        second_pass = False
        if decision.is_plain:
            rows = [[image] for image in decoded.images]
        elif not decoder.overflow:
            rows = [[img[0] for img in frame_views(decoder.planes[slot], decision.views, self.preprocess, decoder.rotation)] for slot in kept]
        else:
            second_pass = True
            decoder.views = decision.views
            try:
                again = decoder.decode(path, self.policy, self.preprocess)
            finally:
                decoder.views = None
            kept = sorted(decoder.seen)
            decoded = again
            rows = [[img[0] for img in decoder.view_images[slot]] for slot in kept]
        per_frame = len(rows[0])
        intervals = np.repeat(np.asarray(decoded.intervals, dtype=np.float64), per_frame, axis=0)
        views = np.tile(np.arange(per_frame, dtype=np.int16), len(rows))
        record = {**decision.to_record(), "analysis_seconds": analysis_seconds, "view_crop_seconds": time.perf_counter() - start - analysis_seconds,
                  "second_pass": second_pass}
        self.registry.put(path, None if decision.is_plain else views, record)
        sink.start(VideoPlan(decoded.info, intervals, self.name, decode_mode=decoded.decode_mode, max_time_error=decoded.max_time_error))
        for row, image in enumerate(image for frame in rows for image in frame):
            sink.write(row, lambda buffer, slot, stream, image=image: self.ops.upload(image, buffer, slot, stream))

    def _decide(self, decoder: LayoutPyAVDecoder, kept: list[int], width: int, height: int) -> LayoutDecision:
        luma = [decoder.luma[slot] for slot in kept if slot in decoder.luma]
        luma = [plane for plane in luma if plane.shape == (height, width)]  # a mid-stream size change is not analysed
        if len(luma) < 3:
            return plain_decision(width, height)
        return analyze_video_layout(np.stack(luma), self.settings)

    def close(self) -> None:
        pass


def with_layouts(results: Iterable[VideoEmbeddings | VideoFailure], registry: LayoutRegistry) -> Iterator[VideoEmbeddings | VideoFailure]:
    """The pipeline's results with each video's views and layout decision attached."""
    for result in results:
        if isinstance(result, VideoFailure):
            registry.pop(result.path)
            yield result
            continue
        views, record = registry.pop(result.info.path)
        yield replace(result, views=views, layout=record)


def build_layout_host_pipeline(backend: Any, sampling: Any, preprocess: PreprocessConfig, settings: LayoutSettings = _DEFAULT_SETTINGS,
                               decode_workers: int = 1, batch_size: int = 32, decoder_options: dict[str, Any] | None = None,
                               overlap: bool = True) -> tuple[Pipeline, LayoutRegistry]:
    """The host pipeline (PyAV + C++ + ``backend``) with layout views.

    Returns:
        (pipeline, registry): run ``with_layouts(pipeline.run(tasks), registry)``.
    """
    ops = HostOps()
    registry = LayoutRegistry()
    return Pipeline(
        session_factory=lambda worker: LayoutDecodeSession(
            sampling, preprocess, ops, registry, settings, LayoutPyAVDecoder(settings, **(decoder_options or {}))),
        engine=BackendEngine(backend, max_batch=batch_size),
        ops=ops,
        image_shape=(3, preprocess.height, preprocess.width),
        num_workers=decode_workers,
        batch_size=batch_size,
        overlap=overlap,
    ), registry
