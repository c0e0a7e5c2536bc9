"""Host device operations: batches are numpy arrays and writes are synchronous."""

from __future__ import annotations

import contextlib
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
