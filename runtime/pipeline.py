"""The CPU pipeline: decode (PyAV) -> sample -> preprocess (C++) -> infer (batched) per video.

Decoding of the next videos runs in worker threads (PyAV and the C++ resizer release the
GIL) while the current video is embedded; at most ``prefetch`` decoded videos wait in
memory at any time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from runtime.backends.base import InferenceBackend
from runtime.dataset import VideoTask
from runtime.decode.base import DecodedVideo, Decoder, DecodeError
from runtime.embeddings import VideoEmbeddings, VideoFailure
from runtime.preprocess import PreprocessConfig
from runtime.sampling import SamplingPolicy

logger = logging.getLogger(__name__)


@dataclass
class CpuPipeline:
    """Embeds videos one after another, decoding ahead in threads.

    Args:
        decoder: the decoder backend.
        backend: an inference backend (activated by ``run``).
        sampling: which frames to keep.
        preprocess: model input contract.
        decode_workers: videos decoded concurrently.
        prefetch: decoded videos allowed to wait for inference (bounds memory).
    """

    decoder: Decoder
    backend: InferenceBackend
    sampling: SamplingPolicy
    preprocess: PreprocessConfig
    decode_workers: int = 1
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.decode_workers < 1 or self.prefetch < 1:
            raise ValueError(f"decode_workers and prefetch must be >= 1, got {self.decode_workers}, {self.prefetch}")

    def run(self, tasks: Iterable[VideoTask]) -> Iterator[VideoEmbeddings | VideoFailure]:
        """Yield one result per task, in task order; failures never stop the run."""
        self.backend.activate()
        pending: deque[tuple[VideoTask, Future[DecodedVideo]]] = deque()
        task_iter = iter(tasks)
        with ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="decode") as pool:

            def submit_next() -> bool:
                task = next(task_iter, None)
                if task is None:
                    return False
                pending.append((task, pool.submit(self.decoder.decode, task.path, self.sampling, self.preprocess)))
                return True

            while len(pending) < self.prefetch + self.decode_workers and submit_next():
                pass
            while pending:
                task, future = pending.popleft()
                result = self._embed(task, future)
                submit_next()
                yield result

    def _embed(self, task: VideoTask, future: Future[DecodedVideo]) -> VideoEmbeddings | VideoFailure:
        try:
            decoded = future.result()
        except DecodeError as exc:
            return VideoFailure(task.video_id, str(task.path), "decode", type(exc).__name__, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the run
            logger.exception("%s: unexpected decode failure", task.video_id)
            return VideoFailure(task.video_id, str(task.path), "decode", type(exc).__name__, str(exc))
        try:
            start = time.perf_counter()
            embeddings = self.backend.infer(decoded.images)
            infer_seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001
            logger.exception("%s: inference failed", task.video_id)
            return VideoFailure(task.video_id, str(task.path), "infer", type(exc).__name__, str(exc))
        return VideoEmbeddings(
            video_id=task.video_id,
            intervals=decoded.intervals,
            embeddings=embeddings,
            info=decoded.info,
            timings={"decode": decoded.decode_seconds, "infer": infer_seconds},
            decoder=decoded.backend,
        )
