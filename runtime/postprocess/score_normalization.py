"""CSLS-style score normalisation of descriptors against a noise set of training data (never test data).

Every query descriptor ``q`` gets a bias that measures how similar it is to "everything":

    bias(q) = aggregate(top-k inner products of q with the noise set)

and the normalised similarity of a (query, reference) pair is ``q . r - beta * bias(q)``.
The bias is folded into the descriptors themselves (Note [bias as an extra dimension]) so that
plain inner-product search over the normalised descriptors ranks by normalised similarity,
exactly as ``vsc2022/vsc/baseline/score_normalization.py`` does.

Note [noise set provenance]: the noise set must come from *training* references only. The
VSC rules forbid fitting anything (PCA, codecs, normalisation statistics) on the test set, and
normalising against the very references being searched would also cancel the true matches.
``fit_noise_set`` is therefore meant to be run once offline on the training references, and
the result shipped in ``model_assets/`` with ``save_noise_set``.

Note [bias as an extra dimension]: with ``q' = [q, -beta * bias(q)]`` and ``r' = [r, 1]``,
``q' . r' = q . r - beta * bias(q)``. The extra dimension counts against the challenge's
512-dimension limit, so descriptors must have at most 511 dimensions before normalisation
(the baseline instead deletes the noise set's lowest-variance dimension; see
``lowest_variance_dim`` and ``drop_dimension`` to do the same).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.io.descriptors import MAX_DESCRIPTOR_DIM, VideoDescriptors, atomic_save_npz
from runtime.postprocess.projection import l2_normalize

logger = logging.getLogger(__name__)

_AGGREGATIONS = ("mean", "max")
_NOISE_KEY = "noise"


@dataclass(frozen=True)
class ScoreNormalization:
    """Parameters of score normalisation.

    Attributes:
        beta: weight of the bias; the baseline uses 1.2.
        k: number of nearest noise descriptors the bias aggregates (capped at the noise set size).
        aggregation: ``"mean"`` of the k similarities (ISC 2021 style, less sensitive to a single
            near-duplicate in the noise set) or ``"max"`` (the k=1 baseline behaviour).
        l2_normalize: L2-normalise queries, references and noise before computing the bias, as
            the baseline does; the extra dimension is appended after normalisation.
    """

    beta: float = 1.2
    k: int = 10
    aggregation: Literal["mean", "max"] = "mean"
    l2_normalize: bool = True

    def __post_init__(self) -> None:
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.aggregation not in _AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {self.aggregation!r}")


def _check_output_dim(dim: int) -> None:
    if dim + 1 > MAX_DESCRIPTOR_DIM:
        raise ValueError(
            f"score normalisation adds one dimension: {dim} + 1 = {dim + 1} exceeds the limit of "
            f"{MAX_DESCRIPTOR_DIM}; reduce descriptors to at most {MAX_DESCRIPTOR_DIM - 1} dimensions "
            f"first (e.g. drop_dimension(videos, lowest_variance_dim(noise)))"
        )


def _check_noise(noise: np.ndarray, dim: int) -> None:
    if noise.ndim != 2 or noise.shape[0] == 0:
        raise ValueError(f"noise must be a non-empty (M, D) array, got shape {noise.shape}")
    if noise.shape[1] != dim:
        raise ValueError(f"noise dimension {noise.shape[1]} does not match descriptor dimension {dim}")
    if not np.isfinite(noise).all():
        raise ValueError("noise contains NaN or Inf")


def _common_dim(videos: Sequence[VideoDescriptors], what: str) -> int | None:
    dims = sorted({v.dim for v in videos})
    if len(dims) > 1:
        raise ValueError(f"all {what} must share one descriptor dimension, got {dims}")
    return dims[0] if dims else None


def query_bias(features: np.ndarray, noise: np.ndarray, config: ScoreNormalization = ScoreNormalization()) -> np.ndarray:
    """Bias of each row: the aggregate of its top-k inner products with the noise set.

    Args:
        features: (N, D) float32 query descriptors, already L2-normalised if the config asks for it.
        noise: (M, D) float32 noise descriptors, prepared the same way.
        config: normalisation parameters (``k`` and ``aggregation`` are used).

    Returns:
        (N,) float32 bias, *before* multiplication by ``-beta``.
    """
    import faiss  # lazy: keeps ``import runtime`` light

    _check_noise(noise, features.shape[1])
    if features.shape[0] == 0:
        return np.zeros((0,), dtype=np.float32)
    k = min(config.k, noise.shape[0])
    index = faiss.IndexFlatIP(noise.shape[1])
    index.add(np.ascontiguousarray(noise, dtype=np.float32))
    similarities, _ = index.search(np.ascontiguousarray(features, dtype=np.float32), k)
    if config.aggregation == "mean":
        return similarities.mean(axis=1).astype(np.float32)
    return similarities[:, 0].astype(np.float32)  # faiss returns neighbours best first


def normalize_queries(
    queries: Sequence[VideoDescriptors],
    noise: np.ndarray,
    config: ScoreNormalization = ScoreNormalization(),
) -> list[VideoDescriptors]:
    """Append the ``-beta * bias`` dimension to every query descriptor.

    Args:
        queries: per-video query descriptors, all of dimension D <= 511.
        noise: (M, D) noise set from training references (never test data; see the module notes).
        config: normalisation parameters.

    Returns:
        New descriptors of dimension D + 1 (float32), timestamps unchanged, in input order.

    Raises:
        ValueError: on mixed or mismatched dimensions, an empty noise set, or D + 1 > 512.
    """
    dim = _common_dim(queries, "queries")
    if dim is None:
        return []
    _check_output_dim(dim)
    noise = np.asarray(noise, dtype=np.float32)
    _check_noise(noise, dim)
    if config.l2_normalize:
        noise = l2_normalize(noise)
    features = [np.asarray(q.features, dtype=np.float32) for q in queries]
    if config.l2_normalize:
        features = [l2_normalize(f) for f in features]
    # One search for all queries: the index is built once per call.
    bias = query_bias(np.concatenate(features), noise, config)
    if len(bias):
        logger.debug("score normalisation: %d query descriptors, mean bias %.4f", len(bias), float(bias.mean()))
    out: list[VideoDescriptors] = []
    start = 0
    for query, feature in zip(queries, features):
        extra = (-config.beta * bias[start : start + len(feature)]).astype(np.float32)[:, None]
        start += len(feature)
        out.append(dataclasses.replace(query, features=np.concatenate([feature, extra], axis=1)))
    return out


def normalize_references(
    refs: Sequence[VideoDescriptors],
    config: ScoreNormalization = ScoreNormalization(),
) -> list[VideoDescriptors]:
    """Append a constant 1 dimension to every reference descriptor.

    Args:
        refs: per-video reference descriptors, all of dimension D <= 511.
        config: normalisation parameters (only ``l2_normalize`` is used).

    Returns:
        New descriptors of dimension D + 1 (float32), timestamps unchanged, in input order.

    Raises:
        ValueError: on mixed dimensions or D + 1 > 512.
    """
    dim = _common_dim(refs, "references")
    if dim is None:
        return []
    _check_output_dim(dim)
    out: list[VideoDescriptors] = []
    for ref in refs:
        feature = np.asarray(ref.features, dtype=np.float32)
        if config.l2_normalize:
            feature = l2_normalize(feature)
        ones = np.ones((len(feature), 1), dtype=np.float32)
        out.append(dataclasses.replace(ref, features=np.concatenate([feature, ones], axis=1)))
    return out


def fit_noise_set(
    train_refs: Sequence[VideoDescriptors],
    max_vectors: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Build the noise set from training-reference descriptors.

    Args:
        train_refs: descriptors of the *training* references (never the test queries or references).
        max_vectors: keep at most this many rows, drawn uniformly without replacement; ``None`` keeps all.
        seed: seed of the subsample, so that the same inputs always give the same noise set.

    Returns:
        (M, D) float32 array; rows keep the order of ``train_refs`` sorted by video id.

    Raises:
        ValueError: when there are no descriptors, dimensions differ, or ``max_vectors < 1``.
    """
    if max_vectors is not None and max_vectors < 1:
        raise ValueError(f"max_vectors must be >= 1 or None, got {max_vectors}")
    _common_dim(train_refs, "training references")
    # Sorting by id makes the result independent of the order the caller loaded videos in.
    videos = sorted((v for v in train_refs if len(v) > 0), key=lambda v: v.video_id)
    if not videos:
        raise ValueError("fit_noise_set needs at least one training-reference descriptor, got none")
    noise = np.concatenate([np.asarray(v.features, dtype=np.float32) for v in videos])
    if max_vectors is not None and noise.shape[0] > max_vectors:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(noise.shape[0], size=max_vectors, replace=False))
        noise = noise[keep]
    return np.ascontiguousarray(noise)


def save_noise_set(path: str | os.PathLike, noise: np.ndarray) -> Path:
    """Write a noise set as a float32 ``.npz`` (key ``noise``), atomically.

    Args:
        path: output path, typically under ``model_assets/``.
        noise: (M, D) array.

    Returns:
        The path written.
    """
    noise = np.asarray(noise)
    if noise.ndim != 2 or noise.shape[0] == 0:
        raise ValueError(f"noise must be a non-empty (M, D) array, got shape {noise.shape}")
    path = Path(path)
    atomic_save_npz(path, **{_NOISE_KEY: noise.astype(np.float32)})
    return path


def load_noise_set(path: str | os.PathLike) -> np.ndarray:
    """Read a noise set written by ``save_noise_set``.

    Args:
        path: the ``.npz`` file.

    Returns:
        (M, D) float32 array.
    """
    with np.load(path, allow_pickle=False) as data:
        if _NOISE_KEY not in data.files:
            raise ValueError(f"{path}: no {_NOISE_KEY!r} array; found {sorted(data.files)}")
        noise = data[_NOISE_KEY]
    if noise.ndim != 2 or noise.dtype != np.float32:
        raise ValueError(f"{path}: noise must be a float32 (M, D) array, got {noise.dtype} {noise.shape}")
    return noise


def lowest_variance_dim(noise: np.ndarray) -> int:
    """Index of the noise set's lowest-variance dimension (the one the baseline deletes).

    Args:
        noise: (M, D) noise set.

    Returns:
        Column index in ``[0, D)``.
    """
    noise = np.asarray(noise, dtype=np.float32)
    if noise.ndim != 2 or noise.shape[0] == 0:
        raise ValueError(f"noise must be a non-empty (M, D) array, got shape {noise.shape}")
    return int(noise.var(axis=0).argmin())


def drop_dimension(videos: Sequence[VideoDescriptors], index: int) -> list[VideoDescriptors]:
    """Delete one feature column from every video (apply the same index to queries, refs and noise).

    Args:
        videos: per-video descriptors of a common dimension D.
        index: the column to delete, ``0 <= index < D``.

    Returns:
        New descriptors of dimension D - 1.
    """
    dim = _common_dim(videos, "videos")
    if dim is None:
        return []
    if not 0 <= index < dim:
        raise ValueError(f"index must be in [0, {dim}), got {index}")
    return [dataclasses.replace(v, features=np.delete(v.features, index, axis=1)) for v in videos]
