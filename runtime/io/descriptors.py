"""Per-video descriptors and the challenge's ``.npz`` storage format.

The format matches ``vsc2022/vsc/storage.py``: three arrays ``video_ids`` (one id per
descriptor row, rows of a video contiguous), ``timestamps`` (N x 2 start/end seconds)
and ``features`` (N x D float32), read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.io.fileio import atomic_output

MAX_DESCRIPTOR_DIM = 512


class DescriptorFileError(ValueError):
    """A descriptor file or set breaks the challenge's format rules."""


@dataclass(frozen=True)
class VideoDescriptors:
    """Descriptors of one video.

    Attributes:
        video_id: the id used in the metadata CSVs (e.g. ``Q200001``).
        timestamps: (N, 2) float32 array of [start, end) seconds each row stands for.
        features: (N, D) float32 array.
    """

    video_id: str
    timestamps: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise DescriptorFileError(
                f"{self.video_id}: features must be 2-D (N, D), got shape {self.features.shape}"
            )
        if self.timestamps.shape != (self.features.shape[0], 2):
            raise DescriptorFileError(
                f"{self.video_id}: timestamps must have shape ({self.features.shape[0]}, 2), "
                f"got {self.timestamps.shape}"
            )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically and byte-reproducibly.

    ``np.savez`` stamps each member with the current time; fixed zip metadata makes two
    runs over the same inputs produce identical files (needed for resumable runs).
    """
    with atomic_output(path) as f:
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with archive.open(info, mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _id_array(ids: Sequence[str]) -> np.ndarray:
    """Plain unicode (never object) array; integer-like ids stay strings as in the metadata."""
    return np.array(list(ids), dtype=np.str_) if ids else np.zeros((0,), dtype="<U1")


def descriptor_arrays(videos: Iterable[VideoDescriptors], dim: int | None = None) -> dict[str, np.ndarray]:
    """The three challenge arrays for a set of videos, sorted by id.

    Args:
        videos: per-video descriptors (videos with zero rows are allowed and omitted).
        dim: descriptor dimension to use when ``videos`` has no rows at all.

    Returns:
        ``{"video_ids", "timestamps", "features"}`` as written to the ``.npz``.
    """
    videos = sorted((v for v in videos if len(v) > 0), key=lambda v: v.video_id)
    ids = [v.video_id for v in videos for _ in range(len(v))]
    if videos:
        dims = {v.dim for v in videos}
        if len(dims) != 1:
            raise DescriptorFileError(f"all videos must share one descriptor dim, got {sorted(dims)}")
        features = np.concatenate([v.features for v in videos]).astype(np.float32, copy=False)
        timestamps = np.concatenate([v.timestamps for v in videos]).astype(np.float32, copy=False)
    else:
        features = np.zeros((0, dim or 0), dtype=np.float32)
        timestamps = np.zeros((0, 2), dtype=np.float32)
    return {"video_ids": _id_array(ids), "timestamps": timestamps, "features": features}


def save_descriptors(
    path: str | os.PathLike,
    videos: Iterable[VideoDescriptors],
    dim: int | None = None,
    durations: Mapping[str, float] | None = None,
    max_dim: int = MAX_DESCRIPTOR_DIM,
) -> Path:
    """Write descriptors in the challenge format, atomically, videos sorted by id.

    The arrays are validated (:func:`validate_descriptor_arrays`) *before* anything is
    written, so a rule violation never leaves an invalid file at ``path``.

    Args:
        path: output ``.npz`` path.
        videos: per-video descriptors (videos with zero rows are allowed and omitted).
        dim: descriptor dimension to use when ``videos`` has no rows at all.
        durations: video id -> budget duration in seconds; when given, ids must be known and
            the total count must stay within sum(ceil(duration)).
        max_dim: the largest allowed descriptor dimension.

    Returns:
        The path written.

    Raises:
        DescriptorFileError: the arrays break a rule; nothing was written.
    """
    path = Path(path)
    arrays = descriptor_arrays(videos, dim)
    validate_descriptor_arrays(**arrays, durations=durations, max_dim=max_dim)
    atomic_save_npz(path, **arrays)
    return path


def load_descriptors(path: str | os.PathLike) -> list[VideoDescriptors]:
    """Read a challenge ``.npz`` into per-video descriptors (file order preserved)."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"video_ids", "timestamps", "features"} - set(data.files)
        if missing:
            raise DescriptorFileError(f"{path}: missing arrays {sorted(missing)}; found {sorted(data.files)}")
        ids, timestamps, features = data["video_ids"], data["timestamps"], data["features"]
    if not (len(ids) == len(timestamps) == len(features)):
        raise DescriptorFileError(
            f"{path}: inconsistent lengths video_ids={len(ids)} timestamps={len(timestamps)} features={len(features)}"
        )
    ids = ids.astype(str)
    videos: list[VideoDescriptors] = []
    start = 0
    for end in list(np.flatnonzero(ids[1:] != ids[:-1]) + 1) + [len(ids)]:
        if end > start:
            videos.append(VideoDescriptors(str(ids[start]), timestamps[start:end], features[start:end]))
        start = end
    return videos


def validate_descriptor_file(
    path: str | os.PathLike,
    durations: Mapping[str, float] | None = None,
    max_dim: int = MAX_DESCRIPTOR_DIM,
) -> None:
    """Apply the checks the challenge runtime applies to a submitted ``.npz``.

    Args:
        path: the ``.npz`` file.
        durations: video id -> duration in seconds from the metadata. When given, ids must
            be known and the total count must stay within sum(ceil(duration)).
        max_dim: the largest allowed descriptor dimension.

    Raises:
        DescriptorFileError: with the first rule broken and the offending values.
    """
    with np.load(path, allow_pickle=False) as data:
        missing = {"video_ids", "timestamps", "features"} - set(data.files)
        if missing:
            raise DescriptorFileError(f"{path}: missing arrays {sorted(missing)}")
        ids, timestamps, features = data["video_ids"], data["timestamps"], data["features"]
    validate_descriptor_arrays(ids, timestamps, features, durations, max_dim)


def validate_descriptor_arrays(
    video_ids: np.ndarray,
    timestamps: np.ndarray,
    features: np.ndarray,
    durations: Mapping[str, float] | None = None,
    max_dim: int = MAX_DESCRIPTOR_DIM,
) -> None:
    """The challenge's rules on the three arrays of a descriptor file (see :func:`validate_descriptor_file`).

    Raises:
        DescriptorFileError: with the first rule broken and the offending values.
    """
    ids = video_ids
    if ids.dtype.kind not in "UiuS":
        raise DescriptorFileError(f"video_ids must be str or int, got dtype {ids.dtype}")
    if features.dtype != np.float32:
        raise DescriptorFileError(f"features must be float32, got {features.dtype}")
    if features.ndim != 2 or not 0 < features.shape[1] <= max_dim:
        raise DescriptorFileError(f"features must be (N, D) with 0 < D <= {max_dim}, got shape {features.shape}")
    if timestamps.ndim != 2 or timestamps.shape[1] != 2:
        raise DescriptorFileError(f"timestamps must be (N, 2), got shape {timestamps.shape}")
    if not (len(ids) == len(timestamps) == len(features)):
        raise DescriptorFileError(
            f"inconsistent lengths: video_ids={len(ids)} timestamps={len(timestamps)} features={len(features)}"
        )
    if not np.isfinite(features).all():
        raise DescriptorFileError("features contain NaN or Inf")
    str_ids = ids.astype(str)
    if len(str_ids) and np.any(str_ids[1:] < str_ids[:-1]):
        bad = int(np.flatnonzero(str_ids[1:] < str_ids[:-1])[0])
        raise DescriptorFileError(f"video_ids must be sorted: {str_ids[bad]!r} comes before {str_ids[bad + 1]!r}")
    if durations is not None:
        unknown = sorted(set(str_ids) - set(durations))
        if unknown:
            raise DescriptorFileError(f"{len(unknown)} video ids not in the metadata, e.g. {unknown[:3]}")
        budget = descriptor_budget(durations.values())
        if len(ids) > budget:
            raise DescriptorFileError(f"{len(ids)} descriptors exceed the budget of {budget} (sum of ceil(duration))")


def descriptor_budget(durations: Iterable[float]) -> int:
    """The challenge's descriptor budget: sum of ceil(duration_sec) over the set."""
    return int(sum(int(np.ceil(float(d))) for d in durations))
