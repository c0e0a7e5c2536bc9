"""Runs an extraction locally or sharded over Ray workers, writing each video into the store as it finishes.

Note [Who writes the store]: workers return each chunk's descriptors (a few KB per video) to
the driver, which writes them into the store one video at a time, atomically. Workers thus
need no shared filesystem with the driver, and what is in the store is always whole videos:
a rerun after the driver, a worker or the whole cluster died skips them (``ResultStore``).

Note [Worker deaths]: a chunk whose worker died (``RayActorError``) goes back to the queue;
Ray restarts the actor (``max_restarts``) and its engine is rebuilt once. A chunk that kills
workers again is split into single videos, and a single video that kills a worker
``max_attempts`` times is recorded as failed (stage ``worker``) so one poisonous file cannot
stall the run. The outcome of a video does not depend on which worker or chunk ran it, so
the merged npz is byte-identical to a local run (tested in ``tests/test_distributed.py``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime.distributed.store import ExtractionStore
from runtime.distributed.worker import ExtractionWorker, Outcome
from runtime.pipeline.extractor import ExtractorConfig
from runtime.records import VideoFailure, VideoTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """How to use Ray.

    Attributes:
        address: ``auto`` (a running cluster if there is one, else a new local one) or a
            cluster address (``ray://host:10001``, ``host:6379``).
        workers: number of actors (default: what the cluster's CPUs or GPUs allow).
        cpus_per_worker: CPUs each actor reserves (also its ONNX Runtime thread count).
        gpus_per_worker: GPUs each actor reserves; > 0 runs the GPU pipeline (one engine per actor).
        chunk_size: videos per actor call (one pipeline run overlaps their decode and inference).
        in_flight: calls queued per actor, so it never waits for the driver between chunks.
        max_restarts: times Ray restarts a dead actor.
        max_attempts: worker deaths a single video may cause before it is recorded as failed.
    """

    address: str = "auto"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    chunk_size: int = 2
    in_flight: int = 2
    max_restarts: int = 4
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(f"cpus_per_worker must be > 0 and gpus_per_worker >= 0, got {self.cpus_per_worker}, {self.gpus_per_worker}")
        if self.chunk_size < 1 or self.in_flight < 1 or self.max_attempts < 1:
            raise ValueError(f"chunk_size, in_flight and max_attempts must be >= 1, got {self.chunk_size}, {self.in_flight}, {self.max_attempts}")


@dataclass
class ExtractReport:
    """What an extraction run did."""

    store: Path
    videos: int
    already_done: int
    succeeded: int
    failures: list[VideoFailure]
    seconds: float
    workers: int
    output_dim: int
    merged: Path | None = None
    worker_deaths: int = 0
    fingerprint: str = ""


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="videos (all workers)", unit="video", disable=not enabled)


def extract(
    tasks: Sequence[VideoTask],
    store_dir: str | os.PathLike,
    config: ExtractorConfig,
    role: str = "reference",
    ray: RayOptions | None = None,
    merge: str | os.PathLike | None = None,
    progress: bool = True,
    on_result: Callable[[Outcome], None] | None = None,
) -> ExtractReport:
    """Extract descriptors of ``tasks`` into the store at ``store_dir`` (resuming), optionally merging them.

    Args:
        tasks: the videos.
        store_dir: the extraction store (created; finished videos of an earlier run are skipped).
        config: extractor settings.
        role: ``query`` or ``reference``.
        ray: None runs in this process; otherwise how to shard over Ray.
        merge: write the finished videos as one challenge npz here (plus its fingerprint sidecar).
        progress: show a progress bar over all workers.
        on_result: called after each video is stored (tests use it to interrupt runs).

    Returns:
        The report; failed videos are listed in it and in the store's ``errors/``.
    """
    start = time.perf_counter()
    if ray is None:
        report, store = _extract_local(tasks, Path(store_dir), config, role, progress, on_result)
    else:
        report, store = _extract_ray(tasks, Path(store_dir), config, role, ray, progress, on_result)
    if merge is not None:
        report.merged, _ = store.merge(tasks, merge, report.output_dim)
    report.seconds = time.perf_counter() - start
    return report


def _finish(
    store: ExtractionStore, tasks: Sequence[VideoTask], already: int, workers: int, dim: int, deaths: int = 0
) -> tuple[ExtractReport, ExtractionStore]:
    failures = store.failures(tasks)
    succeeded = sum(1 for t in tasks if store.results.is_done(t.video_id))
    report = ExtractReport(store.path, len(tasks), already, succeeded, failures, 0.0, workers, dim,
                           worker_deaths=deaths, fingerprint=store.fingerprint)
    return report, store


def _record(store: ExtractionStore, outcome: Outcome, bar: Any, on_result: Callable[[Outcome], None] | None) -> None:
    store.record(outcome)
    if isinstance(outcome, VideoFailure):
        logger.error("%s: %s failed (%s): %s", outcome.video_id, outcome.stage, outcome.error_type, outcome.message)
    bar.update(1)
    if on_result is not None:
        on_result(outcome)


def _extract_local(tasks, store_dir, config, role, progress, on_result) -> tuple[ExtractReport, ExtractionStore]:
    worker = ExtractionWorker(config, role)
    store = ExtractionStore(store_dir, worker.fingerprint(), role)
    todo = store.pending(tasks)
    already = len(tasks) - len(todo)
    if already:
        logger.info("%s: %d of %d videos already done (resuming)", store_dir, already, len(tasks))
    with _progress(len(tasks), already, progress) as bar:
        for outcome in worker.iter_process(todo):
            _record(store, outcome, bar, on_result)
    return _finish(store, tasks, already, 1, worker.output_dim())


def _source_root() -> str:
    """The directory holding the imported ``runtime`` package (a source checkout is not on workers' path)."""
    import runtime

    return str(Path(runtime.__file__).resolve().parents[1])


def blas_threads() -> str:
    """The BLAS/OpenMP thread count a local run in this process uses (see Note [BLAS threads])."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name):
            return os.environ[name]
    return str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def worker_env() -> dict[str, str]:
    """Environment of Ray workers: the source checkout on the path, the driver's BLAS threads.

    Note [BLAS threads]: OpenBLAS picks different kernels (different float rounding) for a
    matrix product depending on its thread count, and both the PCA projection and the
    score-normalisation kNN (faiss switches to BLAS for batches of 20+ rows) go through it.
    Ray sets ``OMP_NUM_THREADS`` to each actor's CPU share (1), which changed the last bit
    of most descriptors against a local run on 2 cores. Workers therefore get the thread
    count a local run in the driver would use, so a run on Ray gives the bytes of a local
    run on the driver's machine. (Across machines this holds for workers of the same CPU
    type: OpenBLAS also picks its kernels by CPU model.)
    """
    path = os.pathsep.join(p for p in (_source_root(), os.environ.get("PYTHONPATH", "")) if p)
    threads = blas_threads()
    return {"PYTHONPATH": path, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}


def connect_ray(address: str) -> None:
    """Connect to (``auto``: or start) a Ray cluster, unless this process is connected already.

    Args:
        address: ``auto`` or a cluster address (see :class:`RayOptions`).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": worker_env()}, "include_dashboard": False}
    ray.init(address=None if address == "auto" else address, **kwargs)


def _worker_count(options: RayOptions, chunks: int) -> int:
    import ray

    if options.workers is not None:
        return max(1, min(options.workers, chunks))
    resources = ray.cluster_resources()
    if options.gpus_per_worker > 0:
        fit = math.floor(resources.get("GPU", 0) / options.gpus_per_worker)
        if fit < 1:
            raise ValueError(f"--gpus-per-worker {options.gpus_per_worker}: the Ray cluster has {resources.get('GPU', 0)} GPUs")
    else:
        fit = math.floor(resources.get("CPU", 1) / options.cpus_per_worker)
    return max(1, min(fit, chunks))


def _worker_config(config: ExtractorConfig, options: RayOptions) -> ExtractorConfig:
    device = config.device
    if options.gpus_per_worker > 0 and device == "auto":
        device = "gpu"
    elif options.gpus_per_worker == 0:
        if device == "gpu":
            raise ValueError("--device gpu with Ray needs --gpus-per-worker > 0")
        device = "cpu"
    threads = config.intra_op_threads or max(1, int(options.cpus_per_worker))  # no oversubscription
    return replace(config, device=device, intra_op_threads=threads)


def _extract_ray(tasks, store_dir, config, role, options: RayOptions, progress, on_result) -> tuple[ExtractReport, ExtractionStore]:
    import ray

    connect_ray(options.address)
    chunks: deque[tuple[tuple[VideoTask, ...], int]] = deque()
    actor_class = ray.remote(ExtractionWorker).options(
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker,
        max_restarts=options.max_restarts,
        max_task_retries=0,  # the driver re-queues (Note [Worker deaths])
    )
    worker_config = _worker_config(config, options)
    # The store's fingerprint comes from a worker: the driver may lack the workers' device.
    actors = [actor_class.remote(worker_config, role)]
    try:
        fingerprint, dim = ray.get([actors[0].fingerprint.remote(), actors[0].output_dim.remote()])
        store = ExtractionStore(store_dir, fingerprint, role)
        todo = store.pending(tasks)
        already = len(tasks) - len(todo)
        if already:
            logger.info("%s: %d of %d videos already done (resuming)", store_dir, already, len(tasks))
        for i in range(0, len(todo), options.chunk_size):
            chunks.append((tuple(todo[i : i + options.chunk_size]), 0))
        count = _worker_count(options, max(len(chunks), 1))
        actors += [actor_class.remote(worker_config, role) for _ in range(count - 1)]
        fingerprints = ray.get([a.fingerprint.remote() for a in actors[1:]])
        if any(f != fingerprint for f in fingerprints):
            raise RuntimeError(f"Ray workers disagree on the extractor fingerprint (other model assets or devices?): {fingerprints}")
        logger.info("extracting %d videos in %d chunks on %d Ray workers", len(todo), len(chunks), count)
        deaths = _dispatch(actors, chunks, options, store, len(tasks), already, progress, on_result)
    finally:  # an interrupted driver must not leave actors holding the cluster's CPUs
        for actor in actors:
            ray.kill(actor)
    return _finish(store, tasks, already, count, dim, deaths)


def _dispatch(actors, chunks, options: RayOptions, store: ExtractionStore, total: int, already: int, progress, on_result) -> int:
    """Keep every actor busy until all chunks are stored; returns the number of worker deaths.

    An actor whose call failed is suspended: it gets no chunks until a ping answers (Ray has
    restarted it) or says it is dead for good. Only the first failure of such an event counts
    against its chunk (the one it was running); chunks queued behind it go back unharmed.
    """
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

    count = len(actors)
    in_flight: dict[Any, tuple[int, tuple[VideoTask, ...], int]] = {}
    pings: dict[Any, int] = {}
    load = [0] * count
    deaths = 0
    alive = [True] * count
    suspended = [False] * count
    with _progress(total, already, progress) as bar:
        while chunks or in_flight:
            for index in range(count):
                while alive[index] and not suspended[index] and load[index] < options.in_flight and chunks:
                    chunk, attempts = chunks.popleft()
                    in_flight[actors[index].process.remote(list(chunk))] = (index, chunk, attempts)
                    load[index] += 1
            if not in_flight and not pings:
                raise RuntimeError(f"every Ray worker died; finished videos are kept in {store.path}: rerun to resume")
            (ready,), _ = ray.wait(list(in_flight) + list(pings), num_returns=1)
            if ready in pings:
                index = pings.pop(ready)
                try:
                    ray.get(ready)
                except ActorUnavailableError:  # still restarting
                    time.sleep(0.5)
                    pings[actors[index].pid.remote()] = index
                except RayActorError:
                    alive[index] = False
                    logger.warning("Ray worker %d is dead for good", index)
                else:
                    suspended[index] = False
                continue
            index, chunk, attempts = in_flight.pop(ready)
            load[index] -= 1
            try:
                outcomes = ray.get(ready)
            except RayActorError as exc:
                first = not suspended[index]
                if first:
                    deaths += 1
                    suspended[index] = True
                    pings[actors[index].pid.remote()] = index
                    logger.warning("Ray worker %d died running %s (%s); re-queued", index, [t.video_id for t in chunk], type(exc).__name__)
                _requeue(chunks, chunk, attempts + (1 if first else 0), options.max_attempts, store, bar, on_result)
                continue
            except RayTaskError as exc:  # the worker raised (a bug, not a bad video): fail the chunk's videos
                for task in chunk:
                    _record(store, VideoFailure(task.video_id, str(task.path), "worker", type(exc.cause).__name__, str(exc.cause)), bar, on_result)
                continue
            for outcome in outcomes:
                _record(store, outcome, bar, on_result)
    return deaths


def _requeue(chunks, chunk, attempts, max_attempts, store, bar, on_result) -> None:
    if attempts < max_attempts:
        chunks.appendleft((chunk, attempts))
    elif len(chunk) > 1:  # find the video that kills workers: retry one by one
        chunks.extendleft((c, attempts - 1) for c in reversed([(t,) for t in chunk]))
    else:
        (task,) = chunk
        failure = VideoFailure(task.video_id, str(task.path), "worker", "WorkerDied", f"its Ray worker died {attempts} times")
        _record(store, failure, bar, on_result)
