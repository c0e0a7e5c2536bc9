"""Which decoded frames to embed: uniform-rate or explicit-time frame selection.

The arithmetic lives in the C++ core (``vcd_core.sample_uniform`` / ``sample_at_times``;
see Note [Sampling contract] in ``cpp/sampler.h``). Times are relative to the first frame,
and each selected frame stands for an interval [start, end) of the video, which becomes the
descriptor's timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime._native import vcd_core


@dataclass(frozen=True)
class SamplingPolicy:
    """How to pick frames from a video.

    Attributes:
        fps: samples per second (finite, > 0); used when ``times`` is None.
        times: explicit sample times in seconds from the first frame; when set, ``fps`` is
            ignored. Must be finite and >= 0; order and duplicates do not matter.
    """

    fps: float = 1.0
    times: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)):
            raise ValueError(f"fps must be a number > 0, got {self.fps!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be finite and > 0, got {self.fps!r}")
        if self.times is not None:
            if isinstance(self.times, (str, bytes)) or not isinstance(self.times, Sequence):
                raise ValueError(f"times must be a sequence of seconds or None, got {self.times!r}")
            times = tuple(float(t) for t in self.times)
            bad = [t for t in times if not (math.isfinite(t) and t >= 0)]
            if bad:
                raise ValueError(f"times must be finite and >= 0, got {bad[:5]!r}")
            object.__setattr__(self, "times", times)


@dataclass(frozen=True)
class FrameSelection:
    """Selected frames, sorted by time.

    Attributes:
        indices: (K,) int64 indices into the pts array the selection was made from.
        intervals: (K, 2) float64 [start, end) seconds (relative to the first frame) that
            each selected frame stands for.
    """

    indices: np.ndarray
    intervals: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.ndim != 1 or self.intervals.shape != (self.indices.shape[0], 2):
            raise ValueError(
                f"indices must be (K,) and intervals (K, 2), got {self.indices.shape} and "
                f"{self.intervals.shape}"
            )

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def select_frames(
    pts: np.ndarray | Sequence[float], policy: SamplingPolicy, duration: float | None = None
) -> FrameSelection:
    """Select the frames to embed from a video's frame timestamps.

    Args:
        pts: (F,) presentation timestamps in seconds, in decode order; may be irregular,
            repeated, shuffled or contain NaN (never selected).
        policy: uniform rate or explicit times.
        duration: video length in seconds; None (or <= 0) derives it from ``pts``.

    Returns:
        The selected frames with the interval each one covers; consecutive samples of the
        same frame are merged into one row.
    """
    pts_array = np.asarray(pts, dtype=np.float64)
    if pts_array.ndim != 1:
        raise ValueError(f"pts must be 1-D, got shape {pts_array.shape}")
    duration_s = -1.0 if duration is None else float(duration)
    if not math.isfinite(duration_s):
        raise ValueError(f"duration must be finite or None, got {duration!r}")
    if policy.times is None:
        indices, intervals = vcd_core.sample_uniform(pts_array, policy.fps, duration_s)
    else:
        times = np.asarray(policy.times, dtype=np.float64)
        indices, intervals = vcd_core.sample_at_times(pts_array, times, duration_s)
    return FrameSelection(indices=indices, intervals=intervals)


def timing_tolerance(policy: SamplingPolicy) -> float:
    """How far (seconds) a frame may lie from its requested sample time before the sample means
    something else: a quarter of the sampling step (0.125 s at 2 samples/s).

    Explicit times use a quarter of their median spacing (0.25 s for a single time).
    """
    if policy.times is None:
        return 0.25 / policy.fps
    times = np.unique(np.asarray(policy.times, dtype=np.float64))
    return 0.25 * float(np.median(np.diff(times))) if times.size > 1 else 0.25


def requested_times(policy: SamplingPolicy, end: float) -> np.ndarray:
    """The sample times (relative seconds) a policy asks for in a video ending at ``end``,
    following Note [Sampling contract] in ``cpp/sampler.h``."""
    if end <= 0:
        return np.zeros(0, dtype=np.float64)
    if policy.times is None:
        count = max(0, math.ceil(end * policy.fps - 1e-6))
        return np.arange(count, dtype=np.float64) / policy.fps
    times = np.unique(np.asarray(policy.times, dtype=np.float64))
    return times[(times >= 0) & (times < end)]


def select_decodable_frames(
    pts: np.ndarray | Sequence[float],
    policy: SamplingPolicy,
    duration: float | None = None,
    decodable: np.ndarray | Sequence[bool] | None = None,
) -> tuple[FrameSelection, float]:
    """``select_frames`` restricted to the frames a decode mode reconstructs, with its timing error.

    The time base and the end of the video stay those of the whole stream (all ``pts``), so the
    requested sample times are the same in every decode mode. Each requested time gets the latest
    decodable frame at or before it (the first decodable frame for times before that one).

    Note [Real frame times in skip modes]: when frames are skipped (``decodable`` given), a row's
    interval starts at the real time of the frame it was decoded from whenever that frame lies
    before the requested time, and the previous row ends there, so a descriptor never claims a
    time its frame was not shown at. With all frames decodable the rows are exactly
    ``select_frames``'s (the frame displayed at the requested time, within one frame).

    Args:
        pts: (F,) presentation timestamps in seconds, in decode order (as for ``select_frames``).
        policy: uniform rate or explicit times.
        duration: video length in seconds; None (or <= 0) derives it from ``pts``.
        decodable: (F,) bool, which frames the decoder will output; None = all.

    Returns:
        The selection and the worst absolute difference (seconds) between a requested sample
        time and the time of the frame used for it (0.0 when nothing is selected).
    """
    pts_array = np.asarray(pts, dtype=np.float64)
    finite = np.isfinite(pts_array)
    if decodable is None:
        selection = select_frames(pts_array, policy, duration)
        skipping = False
    else:
        mask = np.asarray(decodable, dtype=bool)
        if mask.shape != pts_array.shape:
            raise ValueError(f"decodable must match pts, got shapes {mask.shape} and {pts_array.shape}")
        if not (mask & finite).any():
            raise ValueError("no decodable frame with a finite timestamp")
        first = int(np.argmin(np.where(finite, pts_array, np.inf)))
        masked = np.where(mask, pts_array, np.nan)
        masked[first] = pts_array[first]  # keeps the whole stream's time base
        selection = select_frames(masked, policy, duration)
        if not mask[first]:
            substitute = int(np.argmin(np.where(mask & finite, pts_array, np.inf)))
            selection = _merge_repeats(np.where(selection.indices == first, substitute, selection.indices), selection.intervals)
        skipping = True
    if len(selection) == 0:
        return selection, 0.0
    t0 = float(pts_array[finite].min())
    frame_times = pts_array[selection.indices] - t0
    starts = selection.intervals[:, 0]
    requested = requested_times(policy, float(selection.intervals[-1, 1]))
    rows = np.clip(np.searchsorted(starts, requested + 1e-9, side="right") - 1, 0, len(selection) - 1)
    error = float(np.abs(requested - frame_times[rows]).max()) if requested.size else 0.0
    if skipping:
        new_starts = np.minimum(starts, frame_times)
        intervals = np.stack([new_starts, np.append(new_starts[1:], selection.intervals[-1, 1])], axis=1)
        selection = FrameSelection(indices=selection.indices, intervals=intervals)
    return selection, error


def _merge_repeats(indices: np.ndarray, intervals: np.ndarray) -> FrameSelection:
    """Merge consecutive rows that now pick the same frame."""
    keep = np.ones(indices.shape[0], dtype=bool)
    keep[1:] = indices[1:] != indices[:-1]
    rows = np.flatnonzero(keep)
    ends = np.append(intervals[rows[1:], 0], intervals[-1, 1]) if rows.size else np.zeros(0)
    return FrameSelection(indices=indices[rows].astype(np.int64), intervals=np.stack([intervals[rows, 0], ends], axis=1))
