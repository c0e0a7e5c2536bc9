"""L2 normalisation and the fitted linear projection (PCA / learned whitening) of embeddings."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from runtime.io.descriptors import MAX_DESCRIPTOR_DIM


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@dataclass(frozen=True)
class Projection:
    """A linear projection ``y = (x - mean) @ matrix`` fitted on training data only (the shipped one: the training pack).

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
