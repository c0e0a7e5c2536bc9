import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.io.descriptors import (
    DescriptorFileError,
    VideoDescriptors,
    descriptor_budget,
    load_descriptors,
    save_descriptors,
    validate_descriptor_file,
)


def _video(video_id: str, n: int, dim: int = 8, seed: int = 0) -> VideoDescriptors:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float32)
    return VideoDescriptors(video_id, np.stack([t, t + 1], axis=1), rng.standard_normal((n, dim)).astype(np.float32))


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(0, 5), min_size=0, max_size=6), dim=st.integers(1, 16))
def test_roundtrip_sorted_contiguous(tmp_path_factory, counts, dim):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    videos = [_video(f"Q{200000 + 7 * i % 11}-{i}", n, dim, seed=i) for i, n in enumerate(counts)]
    save_descriptors(path, reversed(videos), dim=dim)
    with np.load(path, allow_pickle=False) as data:
        ids = data["video_ids"]
        assert ids.dtype.kind == "U"
        assert list(ids) == sorted(ids)
        assert data["features"].dtype == np.float32 and data["features"].shape[1] == dim
    loaded = {v.video_id: v for v in load_descriptors(path)}
    expected = {v.video_id: v for v in videos if len(v)}
    assert loaded.keys() == expected.keys()
    for vid, v in expected.items():
        np.testing.assert_array_equal(loaded[vid].features, v.features)
        np.testing.assert_array_equal(loaded[vid].timestamps, v.timestamps)


def test_saving_is_byte_reproducible(tmp_path):
    videos = [_video("Q1", 3), _video("Q2", 2, seed=1)]
    a = save_descriptors(tmp_path / "a.npz", videos)
    b = save_descriptors(tmp_path / "b.npz", list(reversed(videos)))
    assert a.read_bytes() == b.read_bytes()


def test_mixed_dims_rejected(tmp_path):
    with pytest.raises(DescriptorFileError, match=re.escape("[4, 8]")):
        save_descriptors(tmp_path / "x.npz", [_video("Q1", 2, 8), _video("Q2", 2, 4)])


def test_shape_mismatch_rejected():
    with pytest.raises(DescriptorFileError, match="timestamps must have shape"):
        VideoDescriptors("Q1", np.zeros((3, 2), np.float32), np.zeros((2, 4), np.float32))


def _write_raw(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(video_ids=np.array(["Q1"]), timestamps=np.zeros((1, 2)), features=np.zeros((1, 4), np.float64)), "float32"),
        (dict(video_ids=np.array(["Q1"]), timestamps=np.zeros((1, 2)), features=np.zeros((1, 513), np.float32)), "D <= 512"),
        (dict(video_ids=np.array(["Q2", "Q1"]), timestamps=np.zeros((2, 2)), features=np.zeros((2, 4), np.float32)), "sorted"),
        (dict(video_ids=np.array(["Q1"]), timestamps=np.zeros((2, 2)), features=np.zeros((2, 4), np.float32)), "inconsistent lengths"),
        (dict(video_ids=np.array(["Q1"]), features=np.zeros((1, 4), np.float32)), "missing arrays"),
        (dict(video_ids=np.array(["Q1"]), timestamps=np.zeros((1, 3)), features=np.zeros((1, 4), np.float32)), r"\(N, 2\)"),
        (dict(video_ids=np.array(["Q1"]), timestamps=np.zeros((1, 2)), features=np.full((1, 4), np.nan, np.float32)), "NaN"),
    ],
)
def test_validator_rejects(tmp_path, arrays, message):
    path = _write_raw(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DescriptorFileError, match=message):
        validate_descriptor_file(path)


def test_validator_object_ids_rejected(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, video_ids=np.array(["Q1"], dtype=object), timestamps=np.zeros((1, 2)), features=np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError):  # numpy refuses object arrays without pickle; either error is a clear rejection
        validate_descriptor_file(path)


def test_validator_budget_and_unknown_ids(tmp_path):
    path = save_descriptors(tmp_path / "d.npz", [_video("Q1", 3), _video("Q2", 2)])
    validate_descriptor_file(path, {"Q1": 2.5, "Q2": 2.0})  # budget 3 + 2 = 5
    with pytest.raises(DescriptorFileError, match="exceed the budget of 4"):
        validate_descriptor_file(path, {"Q1": 2.0, "Q2": 2.0})
    with pytest.raises(DescriptorFileError, match="not in the metadata"):
        validate_descriptor_file(path, {"Q1": 10.0})


@given(st.lists(st.floats(0.001, 1000.0), max_size=20))
def test_budget_is_sum_of_ceil(durations):
    assert descriptor_budget(durations) == sum(int(np.ceil(d)) for d in durations)
