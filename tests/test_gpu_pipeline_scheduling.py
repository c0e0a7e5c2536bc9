"""Scheduling of the overlapped GPU pipeline, driven on the CPU with fake decoders and a fake engine.

Fake frame of video v, sample k: every pixel of channel 0 is v + 1, of channel 1 is k, of
channel 2 is 7. The fake engine embeds an image as its per-channel mean, so every
embedding says exactly which (video, sample) it came from.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.decode.base import DecodeError, VideoPlan
from runtime.device.host import HostOps
from runtime.pipeline.scheduler import Pipeline
from runtime.records import VideoEmbeddings, VideoFailure, VideoInfo

SHAPE = (3, 4, 4)


@dataclass(frozen=True)
class Task:
    video_id: str
    path: str


@dataclass(frozen=True)
class FakeVideo:
    index: int
    frames: int
    frame_delay: float = 0.0
    fail_after: int | None = None  # raise DecodeError after writing this many frames
    restart_after: int | None = None  # write garbage for this many frames, then restart


def fake_image(video: int, sample: int) -> np.ndarray:
    image = np.empty(SHAPE, dtype=np.uint8)
    image[0], image[1], image[2] = video + 1, sample, 7
    return image


def expected_embeddings(video: int, frames: int) -> np.ndarray:
    return np.array([[video + 1, k, 7] for k in range(frames)], dtype=np.float32)


class FakeSession:
    def __init__(self, videos: dict[str, FakeVideo], ops: HostOps) -> None:
        self.videos = videos
        self.ops = ops
        self.name = "fake"
        self.stream = None
        self.closed = False

    def decode_into(self, path: str, sink) -> None:
        video = self.videos[path]
        info = VideoInfo(path=path, duration=float(video.frames), fps=1.0, width=4, height=4, codec="fake")
        intervals = np.stack([np.arange(video.frames), np.arange(video.frames) + 1.0], axis=1).astype(np.float64)
        if video.restart_after is not None:
            sink.start(VideoPlan(info, intervals, "fake"))
            for k in range(video.restart_after):
                garbage = np.full(SHAPE, 250, dtype=np.uint8)
                sink.write(k, lambda buf, slot, stream, img=garbage: self.ops.upload(img, buf, slot, stream))
        sink.start(VideoPlan(info, intervals, "fake", notes=("fake note",)))
        for k in range(video.frames):
            if video.fail_after is not None and k == video.fail_after:
                raise DecodeError(f"{path}: corrupt packet at frame {k}")
            if video.frame_delay:
                time.sleep(video.frame_delay)
            image = fake_image(video.index, k)
            sink.write(k, lambda buf, slot, stream, img=image: self.ops.upload(img, buf, slot, stream))

    def close(self) -> None:
        self.closed = True


@dataclass
class FakePending:
    result: np.ndarray
    busy_seconds: float

    def wait(self) -> np.ndarray:
        return self.result


class FakeEngine:
    output_dim = 3

    def __init__(self, max_batch: int, delay: float = 0.0, fail_video: int | None = None) -> None:
        self.max_batch = max_batch
        self.delay = delay
        self.fail_video = fail_video
        self.batch_videos: list[set[int]] = []
        self.lock = threading.Lock()

    def submit(self, buffer: np.ndarray, count: int, wait_events: list) -> FakePending:
        assert 1 <= count <= self.max_batch
        batch = buffer[:count]
        videos = {int(v) - 1 for v in batch[:, 0, 0, 0]}
        with self.lock:
            self.batch_videos.append(videos)
        if self.fail_video is not None and self.fail_video in videos:
            raise RuntimeError(f"engine exploded on a batch with video {self.fail_video}")
        if self.delay:
            time.sleep(self.delay)
        return FakePending(batch.reshape(count, 3, -1).mean(axis=2).astype(np.float32), self.delay)


def make_pipeline(videos: list[FakeVideo], engine: FakeEngine, **kwargs) -> tuple[Pipeline, list[Task]]:
    ops = HostOps()
    by_path = {f"v{v.index}.mp4": v for v in videos}
    pipeline = Pipeline(lambda worker: FakeSession(by_path, ops), engine, ops, SHAPE, **kwargs)
    return pipeline, [Task(f"Q{v.index:03d}", f"v{v.index}.mp4") for v in videos]


def check_complete(results, videos: list[FakeVideo], failing: set[int] = frozenset()) -> None:
    assert [r.video_id for r in results] == [f"Q{v.index:03d}" for v in videos]
    for result, video in zip(results, videos):
        if video.index in failing:
            assert isinstance(result, VideoFailure), result
            continue
        assert isinstance(result, VideoEmbeddings), result
        np.testing.assert_array_equal(result.embeddings, expected_embeddings(video.index, video.frames))
        np.testing.assert_array_equal(result.intervals[:, 0], np.arange(video.frames))
        assert result.decoder == "fake" and result.notes == ("fake note",)
        assert set(result.timings) >= {"decode", "infer", "latency"}


@pytest.mark.parametrize("overlap", [True, False])
def test_every_video_complete_and_in_input_order(overlap: bool) -> None:
    rng = np.random.default_rng(1)
    videos = [FakeVideo(i, int(rng.integers(1, 30)), frame_delay=float(rng.uniform(0, 0.001))) for i in range(12)]
    engine = FakeEngine(max_batch=16)
    pipeline, tasks = make_pipeline(videos, engine, num_workers=4, overlap=overlap)
    results = list(pipeline.run(tasks))
    check_complete(results, videos)
    assert pipeline.last_stats.videos == 12 and pipeline.last_stats.failures == 0
    assert pipeline.last_stats.frames == sum(v.frames for v in videos)


def test_batches_mix_videos_and_are_full_except_the_last() -> None:
    videos = [FakeVideo(i, 7) for i in range(10)]  # 70 frames, batch 16 -> 4 full + 6
    engine = FakeEngine(max_batch=16)
    pipeline, tasks = make_pipeline(videos, engine, num_workers=3)
    check_complete(list(pipeline.run(tasks)), videos)
    sizes = pipeline.last_stats.batch_sizes
    assert sizes[:-1] == [16] * (len(sizes) - 1) and sizes[-1] == 70 - 16 * 4
    assert sum(len(v) > 1 for v in engine.batch_videos) >= 3


def test_a_failing_video_is_isolated() -> None:
    videos = [FakeVideo(i, 9) for i in range(6)]
    videos[2] = FakeVideo(2, 9, fail_after=4)
    engine = FakeEngine(max_batch=8)
    pipeline, tasks = make_pipeline(videos, engine, num_workers=3)
    results = list(pipeline.run(tasks))
    check_complete(results, videos, failing={2})
    failure = results[2]
    assert failure.stage == "decode" and failure.error_type == "DecodeError" and "frame 4" in failure.message
    assert pipeline.last_stats.failures == 1


def test_engine_failure_fails_only_the_videos_of_that_batch() -> None:
    videos = [FakeVideo(i, 8) for i in range(6)]
    engine = FakeEngine(max_batch=8, fail_video=4)
    pipeline, tasks = make_pipeline(videos, engine, num_workers=1)  # one worker: video 4 is alone in its batch
    results = list(pipeline.run(tasks))
    check_complete(results, videos, failing={4})
    assert results[4].stage == "infer" and "exploded" in results[4].message


def test_restart_discards_earlier_frames() -> None:
    videos = [FakeVideo(0, 5, restart_after=3), FakeVideo(1, 4)]
    pipeline, tasks = make_pipeline(videos, FakeEngine(max_batch=4), num_workers=2)
    check_complete(list(pipeline.run(tasks)), videos)


def test_zero_sample_video_is_a_failure_not_a_hang() -> None:
    videos = [FakeVideo(0, 3), FakeVideo(1, 0), FakeVideo(2, 3)]
    pipeline, tasks = make_pipeline(videos, FakeEngine(max_batch=4), num_workers=2)
    results = list(pipeline.run(tasks))
    check_complete(results, videos, failing={1})
    assert "no frames were selected" in results[1].message


def test_queues_and_memory_stay_bounded() -> None:
    videos = [FakeVideo(i, 12, frame_delay=0.0002) for i in range(30)]
    engine = FakeEngine(max_batch=8, delay=0.004)  # slow engine: decoders must wait for buffers
    pipeline, tasks = make_pipeline(videos, engine, num_workers=4, num_buffers=3, max_inflight_videos=5)
    check_complete(list(pipeline.run(tasks)), videos)
    stats = pipeline.last_stats
    assert stats.max_buffers_in_use <= 3
    assert stats.max_ready_queue <= 3
    assert stats.max_done_queue <= 2
    assert stats.max_results_waiting <= 5


def test_window_starvation_flushes_the_partial_batch() -> None:
    # 1 video in flight, batches far larger than a video: without the starvation flush this hangs
    videos = [FakeVideo(i, 3) for i in range(5)]
    pipeline, tasks = make_pipeline(videos, FakeEngine(max_batch=64), num_workers=2, max_inflight_videos=1)
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(pipeline.run(tasks)), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "pipeline deadlocked"
    check_complete(results, videos)


def test_overlap_is_faster_than_serial() -> None:
    videos = [FakeVideo(i, 12, frame_delay=0.004) for i in range(8)]  # 96 frames, 384 ms of serial decode
    timings = {}
    for overlap in (False, True):
        engine = FakeEngine(max_batch=16, delay=0.025)  # 6 batches, 150 ms of inference
        pipeline, tasks = make_pipeline(videos, engine, num_workers=4, overlap=overlap)
        start = time.perf_counter()
        check_complete(list(pipeline.run(tasks)), videos)
        timings[overlap] = time.perf_counter() - start
    assert timings[True] < 0.8 * timings[False], timings


def test_closing_the_generator_early_stops_the_threads() -> None:
    videos = [FakeVideo(i, 10, frame_delay=0.001) for i in range(20)]
    pipeline, tasks = make_pipeline(videos, FakeEngine(max_batch=8), num_workers=3)
    before = threading.active_count()
    iterator = pipeline.run(tasks)
    first = next(iterator)
    assert first.video_id == "Q000"
    iterator.close()
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 9}, "batch_size must be in [1, 8]"),
        ({"num_workers": 0}, "num_workers must be >= 1"),
        ({"num_buffers": 1}, "num_buffers must be >= 2"),
        ({"max_inflight_videos": 0}, "max_inflight_videos must be >= 1"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_pipeline([FakeVideo(0, 1)], FakeEngine(max_batch=8), **kwargs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(st.integers(0, 20), min_size=1, max_size=8),
    workers=st.integers(1, 4),
    batch=st.integers(1, 8),
    buffers=st.integers(2, 4),
    window=st.integers(1, 6),
    overlap=st.booleans(),
)
def test_any_schedule_returns_every_sample_once(frames, workers, batch, buffers, window, overlap) -> None:
    videos = [FakeVideo(i, n) for i, n in enumerate(frames)]
    pipeline, tasks = make_pipeline(
        videos, FakeEngine(max_batch=batch), num_workers=workers, num_buffers=buffers, max_inflight_videos=window, overlap=overlap
    )
    results = list(pipeline.run(tasks))
    check_complete(results, videos, failing={v.index for v in videos if v.frames == 0})
    assert sum(pipeline.last_stats.batch_sizes) == sum(frames)
