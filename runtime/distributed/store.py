"""The extraction store: per-video results of ``vcd-runtime extract`` and their merge into the challenge npz.

A store is a :class:`runtime.io.results.ResultStore` (``run.json``, ``videos/<id>.npz`` written
atomically per video, ``errors/<id>.json``) whose fingerprint is the extractor's plus the
descriptor role (queries and references differ in the score-normalisation dimension). The
merge goes through :func:`runtime.io.descriptors.save_descriptors`, the writer the local
``python main.py`` run uses, so the same videos and settings give the same bytes.

Next to a merged npz a sidecar ``<name>.fingerprint.json`` records what made the descriptors,
so ``vcd-runtime index add`` can refuse descriptors of another model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.distributed.worker import Finished
from runtime.io.descriptors import VideoDescriptors, load_descriptors, save_descriptors
from runtime.io.fileio import atomic_write_text
from runtime.io.results import ResultStore
from runtime.records import VideoFailure, VideoTask

ROLES = ("query", "reference")
# Settings of the extractor fingerprint that do not change what a descriptor means: the
# device decides the engine (ONNX Runtime fp32 or TensorRT fp16), not the model.
_NOT_MODEL_KEYS = ("device",)


def descriptor_fingerprint(extractor_fingerprint: dict[str, Any]) -> str:
    """A short stable id of the model and settings that made a set of descriptors.

    Args:
        extractor_fingerprint: :meth:`runtime.pipeline.extractor.Extractor.fingerprint`.

    Returns:
        16 hex digits; equal for descriptors that may be searched against each other.
    """
    model = {k: v for k, v in extractor_fingerprint.items() if k not in _NOT_MODEL_KEYS}
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


def sidecar_path(npz: str | os.PathLike) -> Path:
    """Where the fingerprint of a descriptor file is recorded (``X.npz`` -> ``X.fingerprint.json``)."""
    npz = Path(npz)
    return npz.with_name(npz.stem + ".fingerprint.json")


def read_provenance(source: str | os.PathLike) -> dict[str, Any] | None:
    """``{"fingerprint", "role", "score_normalized", "dim"?}`` of an extraction store or a merged npz, or None when unknown."""
    source = Path(source)
    run_file = source / "run.json" if source.is_dir() else sidecar_path(source)
    if not run_file.is_file():
        return None
    data = json.loads(run_file.read_text(encoding="utf-8"))
    if "extractor" in data:  # a store's run.json
        return {"fingerprint": descriptor_fingerprint(data["extractor"]), "role": data.get("role"),
                "score_normalized": data["extractor"].get("score_normalization") is not None}
    return data


def stored_videos(store: str | os.PathLike) -> list[VideoDescriptors]:
    """The finished videos of an extraction store, read-only, sorted by id (videos that kept no descriptor are left out).

    Opening an :class:`ExtractionStore` needs its settings (other settings clear it); this does not.
    """
    videos = [load_descriptors(p) for p in sorted((Path(store) / "videos").glob("*.npz"))]
    return sorted((v for found in videos for v in found), key=lambda v: v.video_id)


class ExtractionStore:
    """Per-video results of one extraction (one role, one set of settings).

    Args:
        path: the store directory.
        extractor_fingerprint: the extractor's fingerprint; results of other settings are discarded.
        role: ``query`` or ``reference`` (the score-normalisation side).
    """

    def __init__(self, path: str | os.PathLike, extractor_fingerprint: dict[str, Any], role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.path = Path(path)
        self.role = role
        self.extractor_fingerprint = extractor_fingerprint
        self.results = ResultStore(self.path, {"extractor": extractor_fingerprint, "role": role})

    @property
    def fingerprint(self) -> str:
        return descriptor_fingerprint(self.extractor_fingerprint)

    def pending(self, tasks: Sequence[VideoTask]) -> list[VideoTask]:
        """The tasks without a finished result (failed ones are retried)."""
        return [t for t in tasks if not self.results.is_done(t.video_id)]

    def record(self, result: Finished | VideoFailure) -> None:
        """Persist one video's outcome (atomic)."""
        if isinstance(result, VideoFailure):
            self.results.record_failure(result)
        else:
            self.results.save(result.descriptors, result.budget_duration, layout=result.layout)

    def failures(self, tasks: Sequence[VideoTask]) -> list[VideoFailure]:
        ids = {t.video_id for t in tasks}
        return [f for f in self.results.failures() if f.video_id in ids and not self.results.is_done(f.video_id)]

    def merge(self, tasks: Sequence[VideoTask], output: str | os.PathLike, dim: int) -> tuple[Path, int]:
        """Write the finished videos among ``tasks`` as one challenge npz and its fingerprint sidecar.

        Args:
            tasks: the videos of the run (unfinished ones are left out).
            output: the ``.npz`` to write (atomically).
            dim: the descriptor dimension (used when no video kept a descriptor).

        Returns:
            The path written and the number of videos in it.
        """
        done_ids = [t.video_id for t in tasks if self.results.is_done(t.video_id)]
        done = [self.results.load(i) for i in done_ids]
        # The budget as the local run counts it: every listed video with a metadata duration,
        # plus the decoded duration of finished videos the metadata lacks.
        durations = {t.video_id: t.duration for t in tasks if t.duration is not None}
        for video_id in done_ids:
            if video_id not in durations and (decoded := self.results.budget_duration(video_id)) is not None:
                durations[video_id] = decoded
        output = save_descriptors(output, done, dim=dim, durations=durations)  # validated before it is written
        atomic_write_text(
            sidecar_path(output),
            json.dumps({"fingerprint": self.fingerprint, "role": self.role, "dim": dim,
                        "score_normalized": self.extractor_fingerprint.get("score_normalization") is not None},
                       sort_keys=True, indent=1),
        )
        return output, len(done)
