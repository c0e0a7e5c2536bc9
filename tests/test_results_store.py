import numpy as np
import pytest

from runtime.io.descriptors import VideoDescriptors
from runtime.io.results import ResultStore
from runtime.records import VideoFailure


def _video(video_id: str, n: int = 2) -> VideoDescriptors:
    return VideoDescriptors(video_id, np.zeros((n, 2), np.float32), np.full((n, 4), 0.5, np.float32))


def test_save_load_and_resume(tmp_path):
    store = ResultStore(tmp_path, {"model": "a"})
    store.save(_video("Q1"))
    store.record_failure(VideoFailure("Q2", "q2.mp4", "decode", "DecodeError", "broken"))
    again = ResultStore(tmp_path, {"model": "a"})
    assert again.is_done("Q1") and not again.is_done("Q2")
    np.testing.assert_array_equal(again.load("Q1").features, _video("Q1").features)
    assert [f.video_id for f in again.failures()] == ["Q2"]
    again.save(_video("Q2"))
    assert again.failures() == []


def test_fingerprint_change_discards_results(tmp_path):
    ResultStore(tmp_path, {"model": "a"}).save(_video("Q1"))
    assert not ResultStore(tmp_path, {"model": "b"}).is_done("Q1")


@pytest.mark.parametrize("video_id", ["../evil", "a/b", "x" * 300, ".hidden", "Q 1"])
def test_unsafe_ids_stay_inside_work_dir(tmp_path, video_id):
    store = ResultStore(tmp_path / "w", {})
    store.save(_video(video_id))
    assert store.load(video_id).video_id == video_id
    assert all(p.is_relative_to(tmp_path / "w") for p in (tmp_path).rglob("*.npz"))


def test_zero_row_video_keeps_id(tmp_path):
    store = ResultStore(tmp_path, {})
    store.save(VideoDescriptors("Q9", np.zeros((0, 2), np.float32), np.zeros((0, 4), np.float32)))
    loaded = store.load("Q9")
    assert loaded.video_id == "Q9" and loaded.features.shape == (0, 4)
