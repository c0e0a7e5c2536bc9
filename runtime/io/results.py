"""Crash-safe per-video results, so an interrupted run resumes where it stopped.

Layout under ``work_dir``: ``run.json`` (the fingerprint of the settings that produced the
results), ``videos/<id>.npz`` (one finished video, written atomically, with the duration its
budget was computed from and, with layout views, its layout decision as JSON) and ``errors/<id>.json`` (one failed video). A result is only trusted when the fingerprint
matches, so changing the model or the settings starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io.descriptors import (
    VideoDescriptors,
    atomic_save_npz,
    descriptor_arrays,
    load_descriptors,
)
from runtime.io.fileio import atomic_write_text
from runtime.records import VideoFailure

logger = logging.getLogger(__name__)

# Bumped whenever the per-video file layout changes: results of another layout are discarded.
STORE_FORMAT = 2
_BUDGET_DURATION_KEY = "budget_duration"
_LAYOUT_KEY = "layout_json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def _file_stem(video_id: str) -> str:
    if _SAFE_ID.match(video_id) and not video_id.startswith("."):
        return video_id
    return "id-" + hashlib.sha256(video_id.encode()).hexdigest()[:32]


class ResultStore:
    """Finished and failed videos of one run, persisted as they complete.

    Args:
        work_dir: where per-video results live.
        fingerprint: JSON-serialisable settings (model hash, sampling, budget...); results
            stored under another fingerprint are discarded.
    """

    def __init__(self, work_dir: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
        self.work_dir = Path(work_dir)
        self.fingerprint = json.loads(json.dumps({"store_format": STORE_FORMAT, **fingerprint}, sort_keys=True))
        run_file = self.work_dir / "run.json"
        if run_file.is_file():
            try:
                previous = json.loads(run_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if previous != self.fingerprint:
                logger.warning("%s: settings changed since the stored results; starting afresh", self.work_dir)
                self.clear()
        for sub in ("videos", "errors"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
            for stale in (self.work_dir / sub).glob("*.tmp"):  # left by a run killed mid-write
                stale.unlink(missing_ok=True)
        atomic_write_text(run_file, json.dumps(self.fingerprint, sort_keys=True, indent=1))

    def clear(self) -> None:
        for sub in ("videos", "errors"):
            shutil.rmtree(self.work_dir / sub, ignore_errors=True)
        (self.work_dir / "run.json").unlink(missing_ok=True)

    def _video_path(self, video_id: str) -> Path:
        return self.work_dir / "videos" / f"{_file_stem(video_id)}.npz"

    def _error_path(self, video_id: str) -> Path:
        return self.work_dir / "errors" / f"{_file_stem(video_id)}.json"

    def is_done(self, video_id: str) -> bool:
        return self._video_path(video_id).is_file()

    def save(self, descriptors: VideoDescriptors, budget_duration: float | None = None, layout: dict[str, Any] | None = None) -> None:
        """Persist one finished video (atomic) and forget an earlier failure of it.

        Args:
            descriptors: the video's final descriptors.
            budget_duration: the duration (seconds) its descriptor budget was computed from:
                the metadata's, or the decoded one for ids the metadata lacks. Stored so that a
                resumed run can check the file-wide budget without decoding again.
            layout: the video's layout decision (``VideoEmbeddings.layout``, JSON-able), None = not analysed.
        """
        arrays = descriptor_arrays([descriptors], dim=descriptors.dim)
        duration = np.float64(np.nan if budget_duration is None else budget_duration)
        extra = {} if layout is None else {_LAYOUT_KEY: np.array(json.dumps(layout, sort_keys=True))}
        atomic_save_npz(self._video_path(descriptors.video_id), **arrays, **{_BUDGET_DURATION_KEY: duration}, **extra)
        self._error_path(descriptors.video_id).unlink(missing_ok=True)

    def budget_duration(self, video_id: str) -> float | None:
        """The duration a finished video's budget was computed from (None when not recorded)."""
        with np.load(self._video_path(video_id), allow_pickle=False) as data:
            if _BUDGET_DURATION_KEY not in data.files:
                return None
            value = float(data[_BUDGET_DURATION_KEY])
        return None if math.isnan(value) else value

    def layout(self, video_id: str) -> dict[str, Any] | None:
        """A finished video's layout decision (None when it was not analysed)."""
        with np.load(self._video_path(video_id), allow_pickle=False) as data:
            return json.loads(str(data[_LAYOUT_KEY])) if _LAYOUT_KEY in data.files else None

    def load(self, video_id: str) -> VideoDescriptors:
        path = self._video_path(video_id)
        videos = load_descriptors(path)
        if not videos:
            # A video may legitimately keep zero descriptors; keep its id.
            with np.load(path, allow_pickle=False) as data:
                dim = data["features"].shape[1]
            return VideoDescriptors(video_id, np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32))
        (video,) = videos
        if video.video_id != video_id:
            raise ValueError(f"{path}: holds {video.video_id!r}, expected {video_id!r}")
        return video

    def record_failure(self, failure: VideoFailure) -> None:
        atomic_write_text(self._error_path(failure.video_id), json.dumps(asdict(failure), sort_keys=True))

    def failures(self) -> list[VideoFailure]:
        out = []
        for path in sorted((self.work_dir / "errors").glob("*.json")):
            out.append(VideoFailure(**json.loads(path.read_text(encoding="utf-8"))))
        return sorted(out, key=lambda f: f.video_id)
