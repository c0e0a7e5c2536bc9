"""What ``vcd-runtime extract --videos DIR|LIST`` means: the video tasks of a directory or a list file."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.io.dataset import VIDEO_SUFFIXES, DatasetError, read_metadata
from runtime.records import VideoTask

logger = logging.getLogger(__name__)


def default_metadata(videos: Path) -> Path | None:
    """``DIR/../<DIR name>_metadata.csv`` (the challenge layout: ``query/`` next to ``query_metadata.csv``), if present."""
    candidate = videos.parent / f"{videos.name}_metadata.csv"
    return candidate if videos.is_dir() and candidate.is_file() else None


def _list_paths(list_file: Path) -> list[Path]:
    paths = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line)
        paths.append(path if path.is_absolute() else list_file.parent / path)
        if not paths[-1].suffix:
            raise DatasetError(f"{list_file}:{number}: {line!r} is not a video file name")
    return paths


def video_tasks_from(videos: str | Path, metadata: Path | None = None) -> list[VideoTask]:
    """The videos to extract, in id order.

    Args:
        videos: a directory of ``*.mp4`` files, or a text file listing one video path per line
            (relative to the list's directory; ``#`` starts a comment). A video's id is its file stem.
        metadata: a ``video_id,duration_sec`` CSV for the descriptor budget (default: the
            challenge layout's ``<DIR>_metadata.csv`` next to a directory; without one the
            budget uses the decoded duration).

    Returns:
        One task per video, sorted by id.

    Raises:
        DatasetError: the input does not exist, lists no video, or two videos share an id.
    """
    videos = Path(videos)
    if videos.is_dir():
        paths = sorted(p for p in videos.iterdir() if p.suffix in VIDEO_SUFFIXES)
    elif videos.is_file():
        paths = _list_paths(videos)
    else:
        raise DatasetError(f"{videos}: no such directory or list file")
    if not paths:
        raise DatasetError(f"{videos}: no videos ({'|'.join(VIDEO_SUFFIXES)} files) found")
    by_id: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_id and by_id[path.stem] != path:
            raise DatasetError(f"{videos}: two videos share the id {path.stem!r}: {by_id[path.stem]} and {path}")
        by_id[path.stem] = path
    metadata = metadata if metadata is not None else default_metadata(videos)
    durations = read_metadata(metadata) if metadata is not None else {}
    if durations:
        missing = [i for i in by_id if i not in durations]
        if missing:
            logger.warning("%d videos are not in %s (e.g. %s): their budget uses the decoded duration", len(missing), metadata, missing[:3])
    return [VideoTask(i, by_id[i], durations.get(i)) for i in sorted(by_id)]
