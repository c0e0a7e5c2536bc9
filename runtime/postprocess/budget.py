"""The per-video descriptor budget: which samples to keep (content change, near-duplicate pruning)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BudgetConfig:
    """Per-video descriptor selection.

    Attributes:
        descriptors_per_second: cap per video = ceil(duration) * this (<= 1.0 keeps the
            global challenge budget, sum of ceil(duration), whatever the other videos do).
        duplicate_similarity: samples whose cosine similarity to an already kept sample of
            the same video is >= this are dropped (near-duplicate pruning); 1.0 disables it.
    """

    descriptors_per_second: float = 1.0
    duplicate_similarity: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.descriptors_per_second <= 1.0:
            raise ValueError(f"descriptors_per_second must be in (0, 1], got {self.descriptors_per_second}")
        if not -1.0 <= self.duplicate_similarity <= 1.0:
            raise ValueError(f"duplicate_similarity must be in [-1, 1], got {self.duplicate_similarity}")

    def cap(self, duration: float) -> int:
        """Most descriptors a video of this duration may keep: 0 for duration 0 (its share of the
        challenge budget is ceil(0) = 0), otherwise at least 1."""
        seconds = math.ceil(max(duration, 0.0) - 1e-9)
        if seconds <= 0:
            return 0
        return max(1, math.floor(seconds * self.descriptors_per_second + 1e-9))


def frame_priority(embeddings: np.ndarray) -> np.ndarray:
    """Priority per sample from content change: 1 - cosine to the previous sample (first = 2).

    Depends on the video alone; ties keep time order (stable sort by callers).
    """
    if len(embeddings) == 0:
        return np.zeros((0,), dtype=np.float32)
    change = 1.0 - np.einsum("ij,ij->i", embeddings[1:], embeddings[:-1])
    return np.concatenate([[2.0], change]).astype(np.float32)


def select_samples(embeddings: np.ndarray, duration: float, config: BudgetConfig) -> np.ndarray:
    """Indices (time-ordered) of the samples to keep within the video's budget.

    Samples are visited by decreasing priority; a sample too similar to one already kept
    is dropped, which frees its slot for the next one (near-duplicate pruning).
    """
    cap = config.cap(duration)
    order = np.argsort(-frame_priority(embeddings), kind="stable")
    if config.duplicate_similarity >= 1.0:
        return np.sort(order[:cap])
    kept: list[int] = []
    for i in order:
        if len(kept) == cap:
            break
        if kept and float(np.max(embeddings[kept] @ embeddings[i])) >= config.duplicate_similarity:
            continue
        kept.append(int(i))
    return np.sort(np.asarray(kept, dtype=np.int64))


def select_count(embeddings: np.ndarray, count: int, duplicate_similarity: float = 1.0) -> np.ndarray:
    """``select_samples`` with an explicit number of samples instead of a duration: at most
    ``count`` (time-ordered) indices, by content change with near-duplicate pruning."""
    if count <= 0 or len(embeddings) == 0:
        return np.zeros((0,), dtype=np.int64)
    # At one descriptor per second, a duration of ``count`` seconds allows exactly ``count`` samples.
    return select_samples(embeddings, float(count), BudgetConfig(1.0, duplicate_similarity))
