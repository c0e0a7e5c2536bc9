"""Batch slots shared by every decode worker: a batch goes to inference when it is sealed and fully written.

Internal to ``runtime.pipeline.scheduler`` (see its module docstring and Note [Starvation flush]).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Stopped(BaseException):
    """The run was abandoned (generator closed or failed); threads unwind.

    A ``BaseException``, so that a decoder's ``except Exception`` (e.g. NVDEC's fallback to the
    CPU decoder) never mistakes the stop signal for a decode error.
    """


@dataclass
class Batch:
    id: int
    buffer: Any
    capacity: int
    keys: list[tuple[int, int, int]] = field(default_factory=list)  # per slot: (video, generation, sample)
    events: dict[int, Any] = field(default_factory=dict)  # stream id -> latest event
    allocated: int = 0
    committed: int = 0
    sealed: bool = False


class Batcher:
    """Hands out batch slots to all workers; a batch is ready when sealed and fully committed."""

    def __init__(
        self,
        allocate: Callable[[], Any],
        capacity: int,
        num_buffers: int,
        on_ready: Callable[[Batch], None],
        stop: threading.Event,
    ) -> None:
        self._allocate = allocate
        self._capacity = capacity
        self._num_buffers = num_buffers
        self._free: list[Any] = []
        self._allocated_buffers = 0
        self._on_ready = on_ready
        self._stop = stop
        self._cond = threading.Condition()
        self._current: Batch | None = None
        self._next_id = 0
        self.max_buffers_in_use = 0
        self._in_use = 0
        self.sizes: list[int] = []

    def _new_batch(self) -> Batch:
        # lock held and a buffer is free or may still be allocated
        if self._free:
            buffer = self._free.pop()
        else:
            buffer = self._allocate()
            self._allocated_buffers += 1
        self._in_use += 1
        self.max_buffers_in_use = max(self.max_buffers_in_use, self._in_use)
        batch = Batch(self._next_id, buffer, self._capacity)
        self._next_id += 1
        return batch

    def acquire(self) -> tuple[Batch, int]:
        ready = None
        with self._cond:
            # A full batch is unset at once, so only "no current batch" needs a new one; re-check
            # after every wait, another worker may have created it meanwhile.
            while self._current is None:
                if self._stop.is_set():
                    raise Stopped
                if self._free or self._allocated_buffers < self._num_buffers:
                    self._current = self._new_batch()
                else:
                    self._cond.wait(timeout=0.1)
            batch = self._current
            slot = batch.allocated
            batch.allocated += 1
            batch.keys.append((-1, -1, -1))
            if batch.allocated == self._capacity:
                batch.sealed = True
                self._current = None
                ready = self._take_if_ready(batch)
        if ready is not None:
            self._on_ready(ready)
        return batch, slot

    def commit(self, batch: Batch, slot: int, key: tuple[int, int, int], stream_key: int, event: Any) -> None:
        with self._cond:
            batch.keys[slot] = key
            if event is not None:
                batch.events[stream_key] = event
            batch.committed += 1
            ready = self._take_if_ready(batch)
        if ready is not None:
            self._on_ready(ready)

    def _take_if_ready(self, batch: Batch) -> Batch | None:
        if batch.sealed and batch.committed == batch.allocated and batch.allocated > 0:
            self.sizes.append(batch.allocated)
            return batch
        return None

    def flush(self) -> None:
        """Seal the partial batch (end of input, or starvation)."""
        ready = None
        with self._cond:
            batch = self._current
            if batch is None:
                return
            self._current = None
            if batch.allocated == 0:
                self._release_locked(batch.buffer)
                return
            batch.sealed = True
            ready = self._take_if_ready(batch)
        if ready is not None:
            self._on_ready(ready)

    def release(self, batch: Batch) -> None:
        with self._cond:
            self._release_locked(batch.buffer)

    def _release_locked(self, buffer: Any) -> None:
        self._free.append(buffer)
        self._in_use -= 1
        self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
