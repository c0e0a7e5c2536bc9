import numpy as np
import pytest

from runtime.decode.pyav import PyAVDecoder
from runtime.infer.base import BackendError, InferenceBackend
from runtime.pipeline.devices import build_host_pipeline
from runtime.preprocess.config import PreprocessConfig
from runtime.records import VideoEmbeddings, VideoFailure, VideoTask
from runtime.sampling import SamplingPolicy
from tests.video_factory import write_video


class PoolingBackend(InferenceBackend):
    """A real (if weak) descriptor: 4x4 average pooling per channel, L2-normalised."""

    name = "pooling"

    def __init__(self, fail_on_batch: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.fail_on_batch = fail_on_batch

    @property
    def input_shape(self):
        return (3, 32, 32)

    @property
    def output_dim(self):
        return 48

    def activate_impl(self):
        pass

    def deactivate_impl(self):
        pass

    def infer_impl(self, images):
        self.calls += 1
        if self.calls == self.fail_on_batch:
            raise RuntimeError("injected failure")
        x = images.astype(np.float32).reshape(len(images), 3, 4, 8, 4, 8).mean(axis=(3, 5)).reshape(len(images), -1)
        x -= x.mean(axis=1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return [write_video(root / f"V{i}.mp4", num_frames=20 + 10 * i, fps=10, seed=i) for i in range(4)]


def _pipeline(backend, workers=1, batch_size=32):
    return build_host_pipeline(
        PyAVDecoder(), backend, SamplingPolicy(fps=1.0), PreprocessConfig(height=32, width=32), decode_workers=workers, batch_size=batch_size
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_and_failures_isolated(videos, tmp_path, workers):
    tasks = [VideoTask(f"V{i}", p, None) for i, p in enumerate(videos)]
    tasks.insert(2, VideoTask("MISSING", tmp_path / "missing.mp4", None))
    results = list(_pipeline(PoolingBackend(), workers).run(tasks))
    assert [r.video_id for r in results] == [t.video_id for t in tasks]
    failure = results[2]
    assert isinstance(failure, VideoFailure) and failure.stage == "decode" and "no such file" in failure.message
    for r, n in zip([r for r in results if isinstance(r, VideoEmbeddings)], [2, 3, 4, 5]):
        assert r.embeddings.shape == (n, 48) and r.intervals.shape == (n, 2)
        assert r.timings["decode"] > 0 and r.decoder == "pyav"


def test_inference_failure_is_per_video(videos):
    tasks = [VideoTask(f"V{i}", p, None) for i, p in enumerate(videos)]
    # batches of 2 in input order: V0 V0 | V1 V1 | V1 V2 | ...; the second batch holds only V1's frames
    results = list(_pipeline(PoolingBackend(fail_on_batch=2), batch_size=2).run(tasks))
    assert [type(r).__name__ for r in results] == ["VideoEmbeddings", "VideoFailure", "VideoEmbeddings", "VideoEmbeddings"]
    assert results[1].stage == "infer" and "injected failure" in results[1].message


def test_deterministic(videos):
    tasks = [VideoTask("V0", videos[0], None)]
    a = next(iter(_pipeline(PoolingBackend()).run(tasks)))
    b = next(iter(_pipeline(PoolingBackend()).run(tasks)))
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


def test_backend_contract_checks():
    backend = PoolingBackend()
    with pytest.raises(BackendError, match="activate"):
        backend.infer(np.zeros((1, 3, 32, 32), np.uint8))
    with backend:
        with pytest.raises(ValueError, match=r"shape \(N, 3, 32, 32\)"):
            backend.infer(np.zeros((1, 3, 16, 16), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            backend.infer(np.zeros((1, 3, 32, 32), np.float32))
        assert backend.infer(np.zeros((0, 3, 32, 32), np.uint8)).shape == (0, 48)
    assert not backend.is_active


def test_pipeline_rejects_bad_settings():
    with pytest.raises(ValueError, match="must be >= 1"):
        build_host_pipeline(PyAVDecoder(), PoolingBackend(), SamplingPolicy(), PreprocessConfig(), decode_workers=0)
