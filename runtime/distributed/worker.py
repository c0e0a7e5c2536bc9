"""One extraction worker: the project's own pipeline (``build_extractor``) kept warm across calls.

The same class runs in-process for a local run and as a Ray actor (one engine per actor; a
GPU actor owns its TensorRT engine for its whole life), so both runs share one code path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from runtime.io.dataset import input_problem
from runtime.io.descriptors import VideoDescriptors
from runtime.pipeline.extractor import Extractor, ExtractorConfig, build_extractor
from runtime.records import VideoEmbeddings, VideoFailure, VideoTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """A finished video: its descriptors, the duration its budget was computed from and its layout decision (None = not analysed)."""

    descriptors: VideoDescriptors
    budget_duration: float
    layout: dict | None = None

    @property
    def video_id(self) -> str:
        return self.descriptors.video_id


Outcome = Finished | VideoFailure


def decoded_duration(video: VideoEmbeddings) -> float:
    """The duration the postprocessor budgets with when the metadata has none (as ``runtime.cli``)."""
    if video.info.duration > 0:
        return float(video.info.duration)
    return float(video.intervals[-1, 1]) if len(video.intervals) else 0.0


class ExtractionWorker:
    """Builds one extractor and turns video tasks into final descriptors (or per-video failures).

    Args:
        config: extractor settings (every worker of a run gets the same).
        role: ``query`` or ``reference`` (the score-normalisation side).
    """

    def __init__(self, config: ExtractorConfig, role: str) -> None:
        if config.model_dir is not None:  # workers may start in another directory
            config = replace(config, model_dir=config.model_dir.resolve())
        self.role = role
        self.extractor: Extractor = build_extractor(config)
        logger.info("worker %d: %s", os.getpid(), self.extractor.describe())

    def fingerprint(self) -> dict:
        return self.extractor.fingerprint()

    def output_dim(self) -> int:
        return self.extractor.output_dim

    def pid(self) -> int:
        return os.getpid()

    def iter_process(self, tasks: Sequence[VideoTask]) -> Iterator[Outcome]:
        """Extract ``tasks`` through one pipeline run (decode overlapped with inference).

        Mirrors the local run (``runtime.cli.run_split``): inputs that cannot be decoded at all
        fail without being opened, and a video the metadata lacks is budgeted by its decoded duration.

        Yields:
            One outcome per task as it finishes; a bad video is a ``VideoFailure``, never an exception.
        """
        todo = []
        for task in tasks:
            problem = input_problem(task)
            if problem is not None:
                yield VideoFailure(task.video_id, str(task.path), "input", "InputError", problem)
            else:
                todo.append(task)
        by_id = {t.video_id: t for t in todo}
        for result in self.extractor.run(todo):
            if isinstance(result, VideoEmbeddings):
                known = by_id[result.video_id].duration
                budget_duration = known if known is not None else decoded_duration(result)
                try:
                    descriptors = self.extractor.finalize(result, budget_duration, role=self.role)
                except (ValueError, ArithmeticError) as exc:  # one bad video must not stop the run
                    yield VideoFailure(result.video_id, result.info.path, "postprocess", type(exc).__name__, str(exc))
                else:
                    yield Finished(descriptors, budget_duration, result.layout)
            else:
                yield result

    def process(self, tasks: Sequence[VideoTask]) -> list[Outcome]:
        """:meth:`iter_process` as one list (what a Ray actor call returns)."""
        return list(self.iter_process(tasks))
