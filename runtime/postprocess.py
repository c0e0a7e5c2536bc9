"""Postprocessing of model embeddings: projection (PCA/whitening), L2 norm, descriptor budget.

Everything here is per video and depends on that video alone (plus fixed, shipped
parameters), as the challenge requires of descriptors.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from runtime.descriptors import MAX_DESCRIPTOR_DIM, VideoDescriptors
from runtime.embeddings import VideoEmbeddings


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@dataclass(frozen=True)
class Projection:
    """A linear projection ``y = (x - mean) @ matrix`` fitted on training references.

    Attributes:
        mean: (D_in,) float32.
        matrix: (D_in, D_out) float32 (PCA components, whitened when fitted so).
        whitened: whether the matrix includes the 1/sqrt(eigenvalue) scaling.
        source: free text naming the data it was fitted on (never test data).
    """

    mean: np.ndarray
    matrix: np.ndarray
    whitened: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.mean.shape != (self.matrix.shape[0],):
            raise ValueError(f"projection mean {self.mean.shape} does not fit matrix {self.matrix.shape}")

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project and L2-normalise rows of ``x`` (N, D_in) -> (N, D_out)."""
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"projection expects {self.input_dim}-d input, got {x.shape[-1]}-d")
        return l2_normalize((np.asarray(x, dtype=np.float32) - self.mean) @ self.matrix)

    @classmethod
    def fit(cls, features: np.ndarray, dim: int, whiten: bool = True, eps: float = 1e-6, source: str = "") -> Projection:
        """Fit PCA (optionally whitening) on training features (N, D_in).

        Args:
            features: training descriptors, one per row (reference/training data only).
            dim: output dimension, <= min(N, D_in) and <= 512.
            whiten: scale each component by 1/sqrt(eigenvalue + eps).
            eps: whitening regulariser.
            source: description of the training data, stored with the projection.
        """
        from sklearn.decomposition import PCA

        features = np.asarray(features, dtype=np.float32)
        if not 0 < dim <= min(features.shape[0], features.shape[1], MAX_DESCRIPTOR_DIM):
            raise ValueError(
                f"dim must be in 1..{min(features.shape[0], features.shape[1], MAX_DESCRIPTOR_DIM)} "
                f"for {features.shape[0]} samples of {features.shape[1]} dims, got {dim}"
            )
        pca = PCA(n_components=dim, svd_solver="full", random_state=0).fit(features)
        matrix = pca.components_.T.astype(np.float32)
        if whiten:
            matrix = matrix / np.sqrt(pca.explained_variance_.astype(np.float32) + eps)
        return cls(mean=pca.mean_.astype(np.float32), matrix=matrix, whitened=whiten, source=source)

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, mean=self.mean, matrix=self.matrix, whitened=np.array(self.whitened), source=np.array(self.source))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Projection:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                mean=data["mean"].astype(np.float32),
                matrix=data["matrix"].astype(np.float32),
                whitened=bool(data["whitened"]),
                source=str(data["source"]),
            )


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
        """Most descriptors a video of this duration may keep (at least 1)."""
        return max(1, math.floor(math.ceil(max(duration, 0.0) - 1e-9) * self.descriptors_per_second + 1e-9))


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


@dataclass
class Postprocessor:
    """Embeddings of one video -> its final descriptors.

    Args:
        projection: optional PCA/whitening; required when the model's dim exceeds 512.
        budget: per-video selection rules.
    """

    projection: Projection | None = None
    budget: BudgetConfig = BudgetConfig()

    def output_dim(self, model_dim: int) -> int:
        dim = self.projection.output_dim if self.projection is not None else model_dim
        if dim > MAX_DESCRIPTOR_DIM:
            raise ValueError(f"descriptors would have {dim} dims (> {MAX_DESCRIPTOR_DIM}); ship a projection in model_assets/")
        return dim

    def __call__(self, video: VideoEmbeddings, duration: float | None = None) -> VideoDescriptors:
        """Project, normalise and apply the budget.

        Args:
            video: model output of one video.
            duration: duration from the metadata (the budget's basis); the decoded duration when None.
        """
        features = video.embeddings
        self.output_dim(features.shape[1])
        features = self.projection.apply(features) if self.projection is not None else l2_normalize(features)
        if duration is None:
            duration = video.info.duration if video.info.duration > 0 else float(video.intervals[-1, 1]) if len(video.intervals) else 0.0
        keep = select_samples(features, duration, self.budget)
        return VideoDescriptors(
            video_id=video.video_id,
            timestamps=video.intervals[keep].astype(np.float32),
            features=np.ascontiguousarray(features[keep], dtype=np.float32),
        )

