"""Device operations the pipeline needs: batch memory, streams, events, uploads (host or CUDA)."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import numpy as np


class DeviceOps(Protocol):
    """Memory, streams and events of the device the batches live on."""

    def allocate_batch(self, capacity: int, image_shape: tuple[int, int, int]) -> Any: ...

    def record_event(self, stream: Any) -> Any:
        """An event marking the work enqueued so far on ``stream`` (None where writes are synchronous)."""
        ...

    def upload(self, image: np.ndarray, buffer: Any, slot: int, stream: Any) -> None:
        """Enqueue a host image (3, H, W) uint8 into a slot."""
        ...

    def thread_scope(self) -> contextlib.AbstractContextManager[Any]:
        """Entered by every pipeline thread (makes the CUDA context current)."""
        ...
