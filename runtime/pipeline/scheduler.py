"""The overlapped extraction pipeline: N decode sessions -> shared engine batches -> per-video results.

Stages (each a thread in ``overlap`` mode):

* **decode workers** (``num_workers``): each owns a decode session (NVDEC decoder + CUDA
  stream on the GPU) and takes the next video. For every sampled frame it asks the batcher
  for a slot, enqueues the write of the preprocessed frame into that slot on its own stream
  (a CUDA kernel, or an upload for CPU-decoded fallbacks), records an event and commits.
* **batcher**: hands out slots of the current batch buffer to all workers, so one engine
  batch mixes frames of several videos. A batch whose slots are all committed goes to the
  inference queue; only the last batch (or a starved one, see Note [Starvation flush]) is
  partial. At most ``num_buffers`` batch buffers exist; a worker that needs a slot while all
  are in flight waits (memory stays flat).
* **inference**: makes the inference stream wait on the batch's events (one per worker
  stream: later events on a stream imply earlier ones), runs the engine and enqueues the
  copy of the embeddings to pinned host memory; no device-wide synchronisation.
* **completion**: waits for each batch's "done" event, scatters the embeddings to their
  videos by (video, sample) and returns the buffer to the batcher.
* the caller's thread yields ``VideoEmbeddings`` (or ``VideoFailure``) in input order.

Every queue is bounded, and at most ``max_inflight_videos`` videos past the next one to be
yielded are being decoded or waiting, so memory does not grow with the input.

``overlap=False`` runs the same components one after another on the caller's thread
(decode a video, run each batch as soon as it is full and wait for it): the ``gpu-serial``
benchmark.

The components are injectable (``DeviceOps``, ``DecodeSession``, ``BatchEngine``), so the
scheduling is tested on the CPU with fake decoders and a fake engine working on numpy
arrays (``tests/test_gpu_pipeline_scheduling.py``); ``HostOps`` + ``BackendEngine`` also make
this the batched CPU pipeline of the benchmark (PyAV + ONNX Runtime).

Note [Starvation flush]
-----------------------
Frames wait in a partial batch until it fills. If every live worker is blocked on the
in-flight window (the consumer has not taken the oldest video yet) the partial batch
would never fill, and the oldest video could never complete: the last worker to start
waiting seals the partial batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.decode.base import DecodeSession, SlotWriter, VideoPlan
from runtime.device.base import DeviceOps
from runtime.infer.base import BatchEngine, PendingBatch
from runtime.pipeline.batcher import Batch, Batcher, Stopped
from runtime.records import VideoEmbeddings, VideoFailure

logger = logging.getLogger(__name__)


@dataclass
class _VideoState:
    position: int
    video_id: str
    path: str
    generation: int = 0
    plan: VideoPlan | None = None
    embeddings: np.ndarray | None = None
    received: np.ndarray | None = None  # bool (K,)
    written: np.ndarray | None = None  # bool (K,)
    decode_finished: bool = False
    failure: VideoFailure | None = None
    done: bool = False
    started: float = 0.0
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    finished: float = 0.0


@dataclass
class PipelineStats:
    """What one run did (read ``Pipeline.last_stats`` after the generator is exhausted).

    Attributes:
        wall_seconds: from start to the last result.
        videos, failures: counts.
        frames: samples embedded.
        batch_sizes: size of every engine batch, in completion order.
        engine_busy_seconds: summed device time of the engine batches.
        max_ready_queue, max_done_queue: deepest the bounded queues got.
        max_buffers_in_use: batch buffers allocated at once (<= num_buffers).
        max_results_waiting: finished videos held back for input order at once.
    """

    wall_seconds: float = 0.0
    videos: int = 0
    failures: int = 0
    frames: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    engine_busy_seconds: float = 0.0
    max_ready_queue: int = 0
    max_done_queue: int = 0
    max_buffers_in_use: int = 0
    max_results_waiting: int = 0

    @property
    def engine_busy_share(self) -> float | None:
        return self.engine_busy_seconds / self.wall_seconds if self.wall_seconds > 0 else None


_END = object()


class Pipeline:
    """Overlapped decode -> batch -> infer pipeline (see the module docstring).

    Args:
        session_factory: ``factory(worker_index) -> DecodeSession``, called inside each
            worker thread (with ``ops.thread_scope()`` entered).
        engine: the batch engine.
        ops: device ops the batch buffers and events come from.
        image_shape: (3, H, W) of one model input.
        num_workers: concurrent decode sessions (7 suits an H100's NVDEC engines).
        batch_size: images per engine batch (<= engine.max_batch).
        num_buffers: batch buffers (>= 2: one filling while one is inferred).
        max_inflight_videos: videos past the oldest unyielded one that may be in progress.
        overlap: False runs the stages serially on the caller's thread.
    """

    def __init__(
        self,
        session_factory: Callable[[int], DecodeSession],
        engine: BatchEngine,
        ops: DeviceOps,
        image_shape: tuple[int, int, int],
        num_workers: int = 7,
        batch_size: int | None = None,
        num_buffers: int = 4,
        max_inflight_videos: int = 64,
        overlap: bool = True,
    ) -> None:
        batch_size = engine.max_batch if batch_size is None else batch_size
        if not 1 <= batch_size <= engine.max_batch:
            raise ValueError(f"batch_size must be in [1, {engine.max_batch}] (the engine's max batch), got {batch_size}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if num_buffers < 2:
            raise ValueError(f"num_buffers must be >= 2 (one filling, one in inference), got {num_buffers}")
        if max_inflight_videos < 1:
            raise ValueError(f"max_inflight_videos must be >= 1, got {max_inflight_videos}")
        self.session_factory = session_factory
        self.engine = engine
        self.ops = ops
        self.image_shape = tuple(image_shape)
        self.num_workers = num_workers
        self.batch_size = batch_size
        self.num_buffers = num_buffers
        self.max_inflight_videos = max_inflight_videos
        self.overlap = overlap
        self.last_stats = PipelineStats()

    # -- shared bookkeeping -------------------------------------------------------------

    def _setup(self, tasks: Iterable[Any]) -> None:
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._states: dict[int, _VideoState] = {}
        self._tasks = iter(tasks)
        self._next_position = 0
        self._next_yield = 0
        self._input_exhausted = False
        self._stats = PipelineStats()
        self._waiting_workers = 0
        self._live_workers = 0

    def _make_batcher(self, on_ready: Callable[[Batch], None]) -> Batcher:
        return Batcher(
            lambda: self.ops.allocate_batch(self.batch_size, self.image_shape),  # type: ignore[arg-type]
            self.batch_size,
            self.num_buffers,
            on_ready,
            self._stop,
        )

    def _next_job(self, wait_for_window: bool) -> _VideoState | None:
        with self._lock:
            while True:
                if self._stop.is_set():
                    raise Stopped
                if self._input_exhausted:
                    return None
                if not wait_for_window or self._next_position < self._next_yield + self.max_inflight_videos:
                    break
                self._waiting_workers += 1
                if self._waiting_workers == self._live_workers:  # Note [Starvation flush]
                    self._lock.release()
                    try:
                        self._batcher.flush()
                    finally:
                        self._lock.acquire()
                self._lock.wait(timeout=0.1)
                self._waiting_workers -= 1
            task = next(self._tasks, None)
            if task is None:
                self._input_exhausted = True
                self._lock.notify_all()
                return None
            state = _VideoState(self._next_position, str(task.video_id), str(task.path))
            self._states[self._next_position] = state
            self._next_position += 1
            return state

    def _fail(self, state: _VideoState, stage: str, exc: BaseException) -> None:
        with self._lock:
            if state.failure is None and not state.done:
                state.failure = VideoFailure(state.video_id, state.path, stage, type(exc).__name__, str(exc))
                state.done = True
                state.finished = time.perf_counter()
                self._lock.notify_all()

    def _check_complete(self, state: _VideoState) -> None:
        # lock held
        if state.done or not state.decode_finished or state.written is None or state.received is None:
            return
        if np.array_equal(state.received, state.written):
            state.done = True
            state.finished = time.perf_counter()
            self._lock.notify_all()

    def _decode_video(self, session: DecodeSession, state: _VideoState) -> None:
        state.started = time.perf_counter()
        sink = _Sink(self, state, session)
        try:
            session.decode_into(state.path, sink)
        except Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the run
            logger.info("%s: decoding failed: %s: %s", state.path, type(exc).__name__, exc)
            self._fail(state, "decode", exc)
            return
        with self._lock:
            state.decode_seconds = time.perf_counter() - state.started
            if state.failure is not None:
                return
            if state.plan is None or state.written is None or not state.written.any():
                count = 0 if state.plan is None else len(state.plan.intervals)
                reason = "the decoder produced no frames" if count else "no frames were selected"
                state.failure = VideoFailure(state.video_id, state.path, "decode", "DecodeError", f"{state.path}: {reason}")
                state.done = True
                state.finished = time.perf_counter()
                self._lock.notify_all()
                return
            if not state.written.all():
                logger.warning("%s: %d of %d samples were not decoded", state.path, int((~state.written).sum()), state.written.size)
            state.decode_finished = True
            self._check_complete(state)

    def _scatter(self, batch: Batch, embeddings: np.ndarray | None, busy: float, error: BaseException | None) -> None:
        with self._lock:
            self._stats.batch_sizes.append(batch.allocated)
            self._stats.engine_busy_seconds += busy
            share = busy / max(batch.allocated, 1)
            touched: set[int] = set()
            for slot, (position, generation, sample) in enumerate(batch.keys):
                state = self._states.get(position)
                if state is None or state.done or generation != state.generation or state.embeddings is None:
                    continue
                if error is not None:
                    touched.add(position)
                    continue
                assert embeddings is not None
                state.embeddings[sample] = embeddings[slot]
                state.received[sample] = True  # type: ignore[index]
                state.infer_seconds += share
                touched.add(position)
            for position in touched:
                state = self._states[position]
                if error is not None:
                    state.failure = VideoFailure(state.video_id, state.path, "infer", type(error).__name__, str(error))
                    state.done = True
                    state.finished = time.perf_counter()
                else:
                    self._check_complete(state)
            self._lock.notify_all()

    def _result(self, state: _VideoState) -> VideoEmbeddings | VideoFailure:
        if state.failure is not None:
            return state.failure
        assert state.plan is not None and state.written is not None and state.embeddings is not None
        keep = state.written
        self._stats.frames += int(keep.sum())
        return VideoEmbeddings(
            video_id=state.video_id,
            intervals=np.asarray(state.plan.intervals, dtype=np.float64)[keep],
            embeddings=state.embeddings[keep],
            info=state.plan.info,
            timings={
                "decode": state.decode_seconds,
                "infer": state.infer_seconds,
                "latency": state.finished - state.started,
            },
            decoder=state.plan.decoder,
            notes=state.plan.notes,
            decode_mode=state.plan.decode_mode,
            max_time_error=state.plan.max_time_error,
            views=None if state.plan.views is None else np.asarray(state.plan.views)[keep],
            layout=state.plan.layout,
            sampled=state.plan.sampled,
            windows=None if state.plan.windows is None else np.asarray(state.plan.windows)[keep],
            inputs=None if state.plan.inputs is None else state.plan.inputs[keep],
        )

    def _pop_ready(self) -> list[VideoEmbeddings | VideoFailure]:
        # lock held
        out = []
        while True:
            state = self._states.get(self._next_yield)
            if state is None or not state.done:
                break
            del self._states[self._next_yield]
            self._next_yield += 1
            out.append(self._result(state))
        waiting = sum(1 for s in self._states.values() if s.done)
        self._stats.max_results_waiting = max(self._stats.max_results_waiting, waiting)
        if out:
            self._lock.notify_all()
        return out

    # -- public -------------------------------------------------------------------------

    def run(self, tasks: Iterable[Any]) -> Iterator[VideoEmbeddings | VideoFailure]:
        """Embed every task (objects with ``video_id`` and ``path``); yields one result per task, in order.

        Args:
            tasks: e.g. ``runtime.dataset.VideoTask`` items.

        Returns:
            An iterator of ``VideoEmbeddings`` / ``VideoFailure``; ``last_stats`` is set when it ends.
        """
        self._setup(tasks)
        start = time.perf_counter()
        try:
            if self.overlap:
                yield from self._run_overlapped()
            else:
                yield from self._run_serial()
        finally:
            self._stats.wall_seconds = time.perf_counter() - start
            self._stats.max_buffers_in_use = self._batcher.max_buffers_in_use
            self.last_stats = self._stats

    def _count(self, results: list[VideoEmbeddings | VideoFailure]) -> list[VideoEmbeddings | VideoFailure]:
        self._stats.videos += len(results)
        self._stats.failures += sum(isinstance(r, VideoFailure) for r in results)
        return results

    def _run_serial(self) -> Iterator[VideoEmbeddings | VideoFailure]:
        def infer_now(batch: Batch) -> None:
            self._infer_and_scatter(batch, self.engine.submit(batch.buffer, batch.allocated, list(batch.events.values())))

        self._batcher = self._make_batcher(infer_now)
        with self.ops.thread_scope():
            session = self.session_factory(0)
            try:
                while (state := self._next_job(wait_for_window=False)) is not None:
                    self._decode_video(session, state)
                    with self._lock:
                        ready = self._pop_ready()
                    yield from self._count(ready)
                self._batcher.flush()
                with self._lock:
                    ready = self._pop_ready()
                yield from self._count(ready)
                if self._states:
                    raise RuntimeError(f"pipeline bug: {len(self._states)} videos never completed")
            finally:
                session.close()

    def _infer_and_scatter(self, batch: Batch, pending: PendingBatch | BaseException) -> None:
        try:
            if isinstance(pending, BaseException):
                raise pending
            embeddings = pending.wait()
            self._scatter(batch, embeddings, float(pending.busy_seconds), None)
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its videos, not the run
            logger.error("inference of batch %d failed: %s: %s", batch.id, type(exc).__name__, exc)
            self._scatter(batch, None, 0.0, exc)
        finally:
            self._batcher.release(batch)

    def _run_overlapped(self) -> Iterator[VideoEmbeddings | VideoFailure]:
        ready_queue: queue.Queue[Any] = queue.Queue(maxsize=self.num_buffers)
        done_queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        errors: list[BaseException] = []

        def put(q: queue.Queue[Any], item: Any, attr: str) -> None:
            while True:
                if self._stop.is_set():
                    raise Stopped
                try:
                    q.put(item, timeout=0.1)
                except queue.Full:
                    continue
                depth = q.qsize()
                with self._lock:
                    setattr(self._stats, attr, max(getattr(self._stats, attr), depth))
                return

        def get(q: queue.Queue[Any]) -> Any:
            while True:
                if self._stop.is_set():
                    raise Stopped
                try:
                    return q.get(timeout=0.1)
                except queue.Empty:
                    continue

        self._batcher = self._make_batcher(lambda batch: put(ready_queue, batch, "max_ready_queue"))

        def guarded(body: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    with self.ops.thread_scope():
                        body()
                except Stopped:
                    pass
                except BaseException as exc:
                    logger.exception("pipeline thread failed")
                    errors.append(exc)
                    self._stop.set()
                    with self._lock:
                        self._lock.notify_all()

            return run

        def worker(index: int) -> None:
            session = None
            try:
                session = self.session_factory(index)
                while (state := self._next_job(wait_for_window=True)) is not None:
                    self._decode_video(session, state)
            finally:
                if session is not None:
                    session.close()
                with self._lock:
                    self._live_workers -= 1
                    last = self._live_workers == 0
                    self._lock.notify_all()
                if last and not self._stop.is_set():
                    self._batcher.flush()
                    put(ready_queue, _END, "max_ready_queue")

        def inference() -> None:
            while (batch := get(ready_queue)) is not _END:
                try:
                    pending: PendingBatch | BaseException = self.engine.submit(
                        batch.buffer, batch.allocated, list(batch.events.values())
                    )
                except Exception as exc:  # noqa: BLE001 - handled per batch in completion
                    pending = exc
                put(done_queue, (batch, pending), "max_done_queue")
            put(done_queue, _END, "max_done_queue")

        def completion() -> None:
            while (item := get(done_queue)) is not _END:
                self._infer_and_scatter(*item)

        self._live_workers = self.num_workers
        threads = [threading.Thread(target=guarded(lambda i=i: worker(i)), name=f"vcd-decode-{i}", daemon=True) for i in range(self.num_workers)]
        threads.append(threading.Thread(target=guarded(inference), name="vcd-infer", daemon=True))
        threads.append(threading.Thread(target=guarded(completion), name="vcd-complete", daemon=True))
        for thread in threads:
            thread.start()
        try:
            while True:
                with self._lock:
                    while True:
                        ready = self._pop_ready()
                        finished = self._input_exhausted and not self._states and self._next_yield == self._next_position
                        if ready or finished or errors:
                            break
                        self._lock.wait(timeout=0.1)
                if errors:
                    raise RuntimeError(f"GPU pipeline thread failed: {type(errors[0]).__name__}: {errors[0]}") from errors[0]
                yield from self._count(ready)
                if finished:
                    break
        finally:
            self._stop.set()
            self._batcher.wake()
            with self._lock:
                self._lock.notify_all()
            for thread in threads:
                thread.join(timeout=30)


class _Sink:
    """The FrameSink a worker hands to its session for one video."""

    def __init__(self, pipeline: Pipeline, state: _VideoState, session: DecodeSession) -> None:
        self._pipeline = pipeline
        self._state = state
        self._session = session
        self._stream_key = id(session)

    def start(self, plan: VideoPlan) -> None:
        intervals = np.asarray(plan.intervals, dtype=np.float64)
        if intervals.ndim != 2 or intervals.shape[1] != 2:
            raise ValueError(f"plan.intervals must be (K, 2), got {intervals.shape}")
        count = intervals.shape[0]
        if plan.views is not None and np.shape(plan.views) != (count,):
            raise ValueError(f"plan.views must have shape ({count},) (one view per row), got {np.shape(plan.views)}")
        if plan.windows is not None and np.shape(plan.windows) != (count,):
            raise ValueError(f"plan.windows must have shape ({count},) (one window per row), got {np.shape(plan.windows)}")
        with self._pipeline._lock:
            state = self._state
            state.generation += 1
            state.plan = plan
            state.embeddings = np.zeros((count, self._pipeline.engine.output_dim), dtype=np.float32)
            state.received = np.zeros(count, dtype=bool)
            state.written = np.zeros(count, dtype=bool)

    def write(self, sample: int, writer: SlotWriter) -> None:
        state = self._state
        if state.written is None:
            raise RuntimeError("FrameSink.write() before start()")
        if not 0 <= sample < state.written.size:
            raise ValueError(f"sample must be in [0, {state.written.size}), got {sample}")
        pipeline = self._pipeline
        batch, slot = pipeline._batcher.acquire()
        key = (state.position, state.generation, sample)
        try:
            writer(batch.buffer, slot, self._session.stream)
            event = pipeline.ops.record_event(self._session.stream)
        except BaseException:
            # the slot still has to be committed (the batch waits for it); a stale key is ignored
            pipeline._batcher.commit(batch, slot, (-1, -1, -1), self._stream_key, None)
            raise
        with pipeline._lock:
            state.written[sample] = True
        pipeline._batcher.commit(batch, slot, key, self._stream_key, event)


