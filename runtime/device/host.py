"""Host device operations (batches are numpy arrays, writes are synchronous) and the host thread budget."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np


class HostOps:
    """Batches are numpy arrays; writes are synchronous, so there are no events."""

    def allocate_batch(self, capacity: int, image_shape: tuple[int, int, int]) -> np.ndarray:
        return np.zeros((capacity, *image_shape), dtype=np.uint8)

    def record_event(self, stream: Any) -> None:
        return None

    def upload(self, image: np.ndarray, buffer: np.ndarray, slot: int, stream: Any) -> None:
        buffer[slot] = image

    def thread_scope(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: containers and ``taskset`` limit it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadBudget:
    """How the usable cores are shared between decoding and inference on the host.

    Each decode worker decodes with one FFmpeg thread and resizes with one C++ thread. The inference
    engine may use every usable core: its threads do not spin (``OnnxRuntimeBackend(allow_spinning=False)``),
    so they give a core back whenever a decoder needs it, and take it whenever the decoders wait on
    the pipeline's in-flight window. A static split (the engine gets ``cores - decoders``) left a core
    idle in those waits: 305 s against 196 s for the full mini-VSC queries on 2 cores
    (benchmarks/RESULTS.md, "One pipeline and the thread budget").

    Attributes:
        cores: usable cores (CPU affinity).
        decode_workers: videos decoded concurrently.
        decoder_threads: FFmpeg threads per decoder.
        resize_threads: C++ resize threads per call (runs in the decode worker).
        inference_threads: intra-op threads of the inference engine.
    """

    cores: int
    decode_workers: int
    decoder_threads: int
    resize_threads: int
    inference_threads: int

    @classmethod
    def plan(cls, decode_workers: int, inference_threads: int = 0, cores: int | None = None) -> ThreadBudget:
        """The budget for ``decode_workers`` decoders; ``inference_threads`` > 0 overrides the engine's share."""
        if decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1, got {decode_workers}")
        if inference_threads < 0:
            raise ValueError(f"inference_threads must be >= 0 (0 = every usable core), got {inference_threads}")
        cores = usable_cores() if cores is None else cores
        engine = inference_threads or cores
        return cls(cores, decode_workers, decoder_threads=1, resize_threads=1, inference_threads=engine)
