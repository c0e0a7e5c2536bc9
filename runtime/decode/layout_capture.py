"""Layout views in the CPU decode pass: keep what the layout analysis and the view crops need.

``PyAVDecoder.decode(..., layout=settings)`` (``runtime/decode/pyav.py``) hands every converted
frame to a ``LayoutCapture``. The samples are cut into time windows (Note [Layout windows] in
``runtime/preprocess/layout.py``); the capture keeps the luma of each window's analysed samples
(at most ``max_analysis_frames`` per window, ``analysis_indices``) and decides the window
(``analyze_video_layout``: from this video's frames only) as soon as the decode pass is past it,
so only one window's luma is held at a time. It also keeps copies of the sampled frames' native
planes, within a byte cap, to cut the views from (the planes of a window decided plain are
dropped at once: its rows are the whole-frame inputs). ``LayoutCapture.finish`` then makes one
model input per (sample, view) of its window from the native resolution. A video whose planes
did not fit in the cap gets its views from a second decode pass over the same frames
(``ViewCutter`` instead of the plain conversion, given each slot's views), so memory stays
bounded whatever the video's length and resolution; both ways give the same inputs (the same
planes, the same crops).

Note [Layout rows]: every sample has the rows of its window's views, in ``views`` order (a
plain window: its one whole-frame row), all with the sample's interval; the rows of one sample
are consecutive, samples in time order. ``views`` gives each row's view within its window and
``windows`` its window. A video whose windows are all plain keeps one whole-frame row per
sample, exactly the rows decoding without layout gives (``views`` and ``windows`` None).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np

from runtime.decode.base import DecodeError
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
    window_bounds,
)

_YUV420P = "yuv420p"
_CUT_BATCH = 32  # frames per crop call (bounded temporaries)

Planes = tuple[str, tuple[np.ndarray, ...]]
"""A frame's native planes: ("yuv420p", (y, u, v)) or ("rgb24", (rgb,))."""


def plane_view(frame: av.VideoFrame, index: int) -> np.ndarray:
    """Plane ``index`` of a frame as a (height, width) uint8 view of its buffer (no copy, padding cut)."""
    plane = frame.planes[index]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def frame_planes(frame: av.VideoFrame, copy: bool = True) -> Planes:
    """A frame's native planes (yuv420p; copies, or views of the frame's buffers that live as long
    as the frame), or its RGB conversion (any other format)."""
    if frame.format.name == _YUV420P:
        return _YUV420P, tuple(np.array(plane_view(frame, p)) if copy else plane_view(frame, p) for p in range(3))
    return "rgb24", (frame.to_ndarray(format="rgb24"),)


def cut_views(planes: list[Planes], views: tuple[View, ...], config: PreprocessConfig, rotation: int) -> np.ndarray:
    """Model inputs of every view of frames of one kind and size: (len(planes) * V, 3, H, W) (Note [Layout rows])."""
    kind = planes[0][0]
    out = []
    for first in range(0, len(planes), _CUT_BATCH):
        chunk = [arrays for _, arrays in planes[first : first + _CUT_BATCH]]
        if kind == _YUV420P:
            y, u, v = (np.stack([arrays[p] for arrays in chunk]) for p in range(3))
            per_view = crop_yuv420p_views(y, u, v, views, config, rotation)
        else:
            per_view = crop_rgb_views(np.stack([arrays[0] for arrays in chunk]), views, config, rotation)
        out.append(np.stack(per_view, axis=1).reshape(-1, *per_view[0].shape[1:]))
    return np.concatenate(out)


def _size(planes: Planes) -> tuple[int, int]:
    height, width = planes[1][0].shape[:2]
    return width, height


class LayoutCapture:
    """What one decode pass keeps for the layout views of one video (module docstring).

    Not thread-safe: one per ``decode`` call.

    Args:
        settings: layout settings (``window_samples``, ``max_analysis_frames``...).
        count: samples the decode pass selects.
        capture_bytes: most bytes of native planes kept; beyond it the views come from a second pass.
    """

    def __init__(self, settings: LayoutSettings, count: int, capture_bytes: int) -> None:
        self.settings = settings
        self.capture_bytes = capture_bytes
        self.bounds = window_bounds(count, settings.window_samples)
        self.window_of = np.repeat(np.arange(len(self.bounds)), [b - a for a, b in self.bounds])
        self._analysed = {a + int(i) for a, b in self.bounds for i in analysis_indices(b - a, settings)}
        self.luma: dict[int, np.ndarray] = {}  # of the windows not decided yet
        self.planes: dict[int, Planes] = {}
        self.sizes: dict[int, tuple[int, int]] = {}  # (width, height) of every kept frame
        self.decisions: dict[int, LayoutDecision | None] = {}  # window -> decision (None = too few frames: plain)
        self.analysis_seconds = 0.0
        self.rotation = 0
        self.overflow = False
        self._bytes = 0
        self._next_window = 0  # the first window not decided
        self._last_slot = -1

    def keep(self, pending: list[tuple[int, av.VideoFrame]], rotation: int) -> None:
        """Keep the luma and planes of converted frames ``(slot, frame)`` (called by the decode pass)."""
        self.rotation = rotation
        for slot, frame in pending:
            window = int(self.window_of[slot])
            self._last_slot = max(self._last_slot, slot)
            undecided = window not in self.decisions
            decision = self.decisions.get(window)
            want_planes = not self.overflow and (undecided or (decision is not None and not decision.is_plain))
            want_luma = undecided and slot in self._analysed
            self.sizes[slot] = (frame.width, frame.height)
            if want_planes:
                planes = frame_planes(frame)
                if want_luma:
                    self.luma[slot] = planes[1][0] if planes[0] == _YUV420P else luma_of_rgb(planes[1][0])
                size = sum(p.nbytes for p in planes[1])
                if self._bytes + size <= self.capture_bytes:
                    self.planes[slot] = planes
                    self._bytes += size
                else:
                    self.overflow = True
                    self.planes.clear()  # a second pass makes every view: these would go unused
                    self._bytes = 0
            elif want_luma:
                self.luma[slot] = _luma(frame)
            self._decide_passed(final=False)  # frame by frame: a plain window's planes go at once

    def _decide_passed(self, final: bool) -> None:
        """Decide the windows the decode pass is past (every one when ``final``), releasing their luma."""
        while self._next_window < len(self.bounds):
            window = self._next_window
            a, b = self.bounds[window]
            if not final and self._last_slot < b - 1:
                return
            luma = [self.luma.pop(slot) for slot in range(a, b) if slot in self.luma]
            decision = None
            if len(luma) >= 3 and len({frame.shape for frame in luma}) == 1:
                start = time.perf_counter()
                decision = analyze_video_layout(np.stack(luma), self.settings)
                self.analysis_seconds += time.perf_counter() - start
            self.decisions[window] = decision
            if decision is None or decision.is_plain:  # its rows are the whole-frame inputs
                for slot in range(a, b):
                    if (planes := self.planes.pop(slot, None)) is not None:
                        self._bytes -= sum(p.nbytes for p in planes[1])
            self._next_window += 1

    def decide(self, kept: list[int], width: int, height: int) -> list[LayoutDecision]:
        """Every window's decision once the decode pass is over.

        A window is plain when fewer than 3 of its analysed frames were decoded, or when the size
        of its kept frames changes (one set of rects cannot fit every frame). ``width`` x ``height``
        (the stream's) only sizes a plain decision of a window without one frame size.
        """
        self._decide_passed(final=True)
        sizes: dict[int, set[tuple[int, int]]] = {}
        for slot in kept:  # every kept frame went through ``keep``
            sizes.setdefault(int(self.window_of[slot]), set()).add(self.sizes[slot])
        out = []
        for window in range(len(self.bounds)):
            decision, found = self.decisions[window], sizes.get(window, set())
            if decision is None or found != {decision.frame_size}:
                decision = plain_decision(*(next(iter(found)) if len(found) == 1 else (width, height)))
            out.append(decision)
        return out

    def finish(self, path: str, kept: list[int], width: int, height: int, images: np.ndarray, intervals: np.ndarray,
               preprocess: PreprocessConfig, second_pass: Callable[[ViewCutter], list[Any]],
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        """The video's rows (Note [Layout rows]) once the decode pass is over.

        Args:
            path: the video (for messages).
            kept: the slots that were decoded, in time order.
            width, height: the stream's coded frame size.
            images: (len(kept), 3, H, W) the whole-frame model inputs of those slots.
            intervals: float64 (len(selection), 2) every selected slot's interval.
            preprocess: the model input contract.
            second_pass: decodes the same selection again through a ``ViewCutter`` and returns its
                per-slot results (None where a frame was not decoded or not asked for).

        Returns:
            (images, intervals, views, windows, record): one row per (sample, view of its window);
            ``views`` int16 and ``windows`` int32 per row (both None when every window is plain:
            the rows are ``images`` unchanged); the record: the window decisions (each with its
            ``samples`` [a, b) and ``times``), a summary ``kind`` and the totals.
        """
        start = time.perf_counter()
        decisions = self.decide(kept, width, height)
        analysed = time.perf_counter()
        again = False
        views = windows = None
        if all(decision.is_plain for decision in decisions):
            rows, row_intervals = images, intervals[kept]
        else:
            of_slot = [decisions[int(w)] for w in self.window_of]
            split = [slot for slot in kept if not of_slot[slot].is_plain]
            if not self.overflow:
                cut = self._cut(split, of_slot, preprocess)
            else:
                again = True
                wanted = [None if decision.is_plain else decision.views for decision in of_slot]
                made = second_pass(ViewCutter(wanted, preprocess, [decision.frame_size for decision in of_slot]))
                cut = {slot: made[slot] for slot in split if made[slot] is not None}
            blocks, row_slots = [], []
            for k, slot in enumerate(kept):
                block = images[k : k + 1] if of_slot[slot].is_plain else cut.get(slot)
                if block is not None:  # a split slot the second pass missed is left out
                    blocks.append(block)
                    row_slots.append(np.full(len(block), slot))
            if not blocks:
                raise DecodeError(f"{path}: the second decode pass for the layout views decoded no frame")
            rows = np.concatenate(blocks)
            slots = np.concatenate(row_slots)
            row_intervals = intervals[slots]
            views = np.concatenate([np.arange(len(block), dtype=np.int16) for block in blocks])
            windows = self.window_of[slots].astype(np.int32)
        kinds = sorted({decision.kind for decision in decisions})
        record = {
            "kind": "+".join(kinds),
            "window_samples": self.settings.window_samples,
            "windows": [{"samples": [a, b], "times": [float(intervals[a, 0]), float(intervals[b - 1, 1])] if b > a else [],
                         **decision.to_record()} for (a, b), decision in zip(self.bounds, decisions)],
            "analysis_seconds": self.analysis_seconds + (analysed - start),
            "view_crop_seconds": time.perf_counter() - analysed,
            "second_pass": again,
        }
        return rows, row_intervals, views, windows, record

    def _cut(self, slots: list[int], of_slot: list[LayoutDecision], preprocess: PreprocessConfig) -> dict[int, np.ndarray]:
        """(V, 3, H, W) views of each of ``slots`` from the captured planes (which are released)."""
        by_group: dict[tuple[int, str], list[int]] = {}
        for slot in slots:
            by_group.setdefault((int(self.window_of[slot]), self.planes[slot][0]), []).append(slot)
        cut = {}
        for members in by_group.values():
            rows = cut_views([self.planes[slot] for slot in members], of_slot[members[0]].views, preprocess, self.rotation)
            cut.update(zip(members, np.split(rows, len(members))))
        self.planes.clear()
        self._bytes = 0
        return cut


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """A copy of a frame's luma (its Y plane, or the luma of its RGB conversion)."""
    if frame.format.name == _YUV420P:
        return np.array(plane_view(frame, 0))
    return luma_of_rgb(frame.to_ndarray(format="rgb24"))


class ViewCutter:
    """The conversion of a second decode pass: every view of each frame, straight from its planes.

    Args:
        views: per slot of the selection, the views of its window (None = not cut: a plain window).
        preprocess: the model input contract.
        frame_sizes: per slot, the (width, height) its views' rects are in; a frame of another size is left out.
    """

    def __init__(self, views: Sequence[tuple[View, ...] | None], preprocess: PreprocessConfig,
                 frame_sizes: Sequence[tuple[int, int]]) -> None:
        self.views = views
        self.preprocess = preprocess
        self.frame_sizes = frame_sizes

    def __call__(self, pending: list[tuple[int, av.VideoFrame]], images: list[Any], rotation: int) -> None:
        """Set ``images[slot]`` to the (V, 3, H, W) views of each pending ``(slot, frame)`` that has views."""
        groups: dict[tuple[tuple[View, ...], str], list[tuple[int, Planes]]] = {}
        for slot, frame in pending:
            views = self.views[slot]
            if views is None:
                continue
            planes = frame_planes(frame, copy=False)  # cut before the frames are released
            if _size(planes) == self.frame_sizes[slot]:
                groups.setdefault((views, planes[0]), []).append((slot, planes))
        for (views, _), members in groups.items():
            cut = cut_views([planes for _, planes in members], views, self.preprocess, rotation)
            for (slot, _), rows_of in zip(members, np.split(cut, len(members))):
                images[slot] = rows_of
