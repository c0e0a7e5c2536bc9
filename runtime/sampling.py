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
