"""The challenge's data layout: ``query_subset.csv``, ``{query,reference}_metadata.csv``, ``{query,reference}/*.mp4``.

The file names of the outputs and of a submission live here too, so that the CLI and the
submission packer (``runtime.pack``) agree on them.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from pathlib import Path

from runtime.records import VideoTask

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4",)

# Outputs of a code-execution run (in the output directory) and members of a submission zip.
SUBSET_QUERY_DESCRIPTORS_FILE = "subset_query_descriptors.npz"
QUERY_DESCRIPTORS_FILE = "query_descriptors.npz"
REFERENCE_DESCRIPTORS_FILE = "reference_descriptors.npz"
SUBSET_MATCHES_FILE = "subset_matches.csv"
FULL_MATCHES_FILE = "full_matches.csv"


class DatasetError(ValueError):
    """The data directory or one of its CSV files is unusable as a whole."""


def _read_csv(path: Path, required: tuple[str, ...]):
    import pandas as pd

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark that would otherwise
        # become part of the first column's name.
        frame = pd.read_csv(path, dtype={"video_id": str}, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{path}: empty CSV (expected columns {list(required)})") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: malformed CSV ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; found {list(frame.columns)}")
    return frame


def read_metadata(path: Path) -> dict[str, float | None]:
    """video_id -> duration_sec (None where missing, negative or not a number; 0 stays 0)."""
    import pandas as pd

    frame = _read_csv(path, ("video_id", "duration_sec"))
    durations: dict[str, float | None] = {}
    duplicates = 0
    for video_id, duration in zip(frame["video_id"].astype(str).str.strip(), pd.to_numeric(frame["duration_sec"], errors="coerce")):
        if video_id in durations:
            duplicates += 1
            continue
        durations[video_id] = float(duration) if math.isfinite(duration) and duration >= 0 else None
    if duplicates:
        logger.warning("%s: %d duplicate video ids; the first row of each is kept", path, duplicates)
    return durations


def read_video_ids(path: Path) -> list[str]:
    """Ids from a one-column CSV with a ``video_id`` header, duplicates removed (first kept)."""
    frame = _read_csv(path, ("video_id",))
    ids = [str(v).strip() for v in frame["video_id"].dropna()]
    unique = list(dict.fromkeys(i for i in ids if i))
    if len(unique) < len(ids):
        logger.warning("%s: %d duplicate or empty video ids ignored", path, len(ids) - len(unique))
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


def input_problem(task: VideoTask) -> str | None:
    """Why a task's input cannot be decoded at all, checked without opening it; None when it may be.

    Catches what a decoder would report confusingly or not at all: ids that would point outside
    the split directory, directories named like videos, FIFOs (opening one blocks), symlink loops
    and files this process may not read.
    """
    video_id = task.video_id
    if not video_id or video_id in (".", "..") or any(c in video_id for c in "/\\\0") or video_id != video_id.strip():
        return f"unusable video id {video_id!r} (path separators, NUL, '..' or surrounding blanks)"
    path = Path(task.path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path}: no such file" if not path.is_symlink() else f"{path}: dangling symlink"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: symlink loop"
        return f"{path}: cannot stat ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return f"{path}: is a directory, not a video file"
    if not stat.S_ISREG(mode):
        return f"{path}: not a regular file (FIFO, socket or device)"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied (not readable by this process)"
    return None
