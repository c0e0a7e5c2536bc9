"""The challenge's data layout: ``query_subset.csv``, ``{query,reference}_metadata.csv``, ``{query,reference}/*.mp4``."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.records import VideoTask

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4",)


class DatasetError(ValueError):
    """The data directory or one of its CSV files is unusable as a whole."""


def _read_csv(path: Path, required: tuple[str, ...]):
    import pandas as pd

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype={"video_id": str})
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{path}: empty CSV (expected columns {list(required)})") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: malformed CSV ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; found {list(frame.columns)}")
    return frame


def read_metadata(path: Path) -> dict[str, float | None]:
    """video_id -> duration_sec (None where missing or not a positive number)."""
    import pandas as pd

    frame = _read_csv(path, ("video_id", "duration_sec"))
    durations: dict[str, float | None] = {}
    for video_id, duration in zip(frame["video_id"].astype(str).str.strip(), pd.to_numeric(frame["duration_sec"], errors="coerce")):
        if video_id in durations:
            logger.warning("%s: duplicate video_id %s; keeping the first row", path, video_id)
            continue
        durations[video_id] = float(duration) if duration == duration and duration > 0 else None
    return durations


def read_video_ids(path: Path) -> list[str]:
    """Ids from a one-column CSV with a ``video_id`` header, duplicates removed (first kept)."""
    frame = _read_csv(path, ("video_id",))
    ids = [str(v).strip() for v in frame["video_id"].dropna()]
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        logger.warning("%s: %d duplicate video ids ignored", path, len(ids) - len(unique))
    return unique


def video_tasks(data_dir: Path, split: str = "query", subset_csv: Path | None = None) -> list[VideoTask]:
    """The videos of one split, in id order.

    Args:
        data_dir: the challenge data directory.
        split: ``query`` or ``reference``.
        subset_csv: restrict to the ids in this CSV (``query_subset.csv`` for the code-execution run).
    """
    if split not in ("query", "reference"):
        raise ValueError(f"split must be 'query' or 'reference', got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: data directory not found")
    metadata_path = data_dir / f"{split}_metadata.csv"
    durations = read_metadata(metadata_path) if metadata_path.is_file() else {}
    if not durations:
        logger.warning("%s: no metadata; the descriptor budget falls back to decoded durations", metadata_path)
    ids = read_video_ids(subset_csv) if subset_csv is not None else sorted(durations) or sorted(
        p.stem for p in (data_dir / split).glob("*") if p.suffix in VIDEO_SUFFIXES
    )
    unknown = [i for i in ids if durations and i not in durations]
    if unknown:
        logger.warning("%d ids are not in %s (e.g. %s): their budget uses the decoded duration", len(unknown), metadata_path, unknown[:3])
    return [VideoTask(i, data_dir / split / f"{i}.mp4", durations.get(i)) for i in sorted(ids)]
