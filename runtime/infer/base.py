"""Inference backend interface: a loader/runner split in the style of Polygraphy.

A backend turns a batch of preprocessed images (uint8 NCHW, the model's input contract
from ``model_assets/manifest.json``) into L2-normalised embeddings (float32, N x D).
Subclasses implement the ``*_impl`` methods; the public methods add state checks,
input validation and timing.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Protocol

import numpy as np


class BackendError(RuntimeError):
    """A backend could not be created or run."""


class InferenceBackend(ABC):
    """Runs the descriptor model on batches of images.

    Attributes:
        name: short backend name used in logs and benchmarks (``ort-cpu``, ``tensorrt``...).
        inference_time: seconds spent in ``infer`` since activation (wall clock).
        images_processed: images processed since activation.
    """

    name: str = "backend"

    def __init__(self) -> None:
        self.inference_time = 0.0
        self.images_processed = 0
        self._active = False

    @property
    def is_active(self) -> bool:
        return self._active

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) expected per image."""

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Embedding dimension."""

    @property
    def preferred_batch_size(self) -> int:
        """Batch size the backend runs most efficiently at (callers may send fewer)."""
        return 32

    def activate(self) -> InferenceBackend:
        """Create sessions/engines and buffers. Idempotent."""
        if not self._active:
            self.activate_impl()
            self._active = True
            self.inference_time = 0.0
            self.images_processed = 0
        return self

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            images: uint8 array (N, C, H, W) matching ``input_shape``; N may be 0.

        Returns:
            float32 array (N, output_dim). The array is owned by the caller (never reused).
        """
        if not self._active:
            raise BackendError(f"{self.name}: call activate() (or use the backend as a context manager) before infer()")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: expected images of shape (N, {', '.join(map(str, self.input_shape))}), got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{self.name}: expected uint8 images, got {images.dtype}")
        if images.shape[0] == 0:
            return np.zeros((0, self.output_dim), dtype=np.float32)
        start = time.perf_counter()
        out = self.infer_impl(np.ascontiguousarray(images))
        self.inference_time += time.perf_counter() - start
        self.images_processed += images.shape[0]
        return out

    def deactivate(self) -> None:
        """Release sessions/engines and buffers. Idempotent."""
        if self._active:
            self.deactivate_impl()
            self._active = False

    def __enter__(self) -> InferenceBackend:
        return self.activate()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.deactivate()

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, images: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def deactivate_impl(self) -> None: ...



class ModelBackend(InferenceBackend):
    """An ``InferenceBackend`` whose input shape and output dim are read from the model on ``activate``.

    Subclasses set ``self._shape`` and ``self._dim`` in ``activate_impl``; ``what`` names the
    thing read (``model``, ``engine``) in the error raised when asked before activation.
    """

    what = "model"

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, int, int] | None = None
        self._dim: int | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self._shape is None:
            raise BackendError(f"{self.name}: activate() first to read the {self.what}'s input shape")
        return self._shape

    @property
    def output_dim(self) -> int:
        if self._dim is None:
            raise BackendError(f"{self.name}: activate() first to read the {self.what}'s output dim")
        return self._dim

class PendingBatch(Protocol):
    def wait(self) -> np.ndarray:
        """Block until done; returns float32 (count, D), owned by the caller."""
        ...

    @property
    def busy_seconds(self) -> float:
        """Device time of the inference (valid after ``wait``)."""
        ...


class BatchEngine(Protocol):
    """Runs the model on the first ``count`` images of a batch buffer.

    Attributes:
        max_batch: largest count accepted.
        output_dim: embedding size.
    """

    max_batch: int
    output_dim: int

    def submit(self, buffer: Any, count: int, wait_events: list[Any]) -> PendingBatch: ...


class OutputSlots:
    """A fixed pool of output-buffer indices shared by concurrent device inferences (Note [Buffer reuse]
    in ``runtime/infer/trt.py``): ``acquire`` blocks until one is free; thread-safe."""

    def __init__(self, count: int) -> None:
        self._free = list(range(count))
        self._cond = threading.Condition()

    def acquire(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop()

    def release(self, slot: int) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify()
