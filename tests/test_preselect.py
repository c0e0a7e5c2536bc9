"""Pre-selection before inference (runtime/preprocess/preselect.py): properties and the host-session hook."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.preprocess.preselect import (
    PreselectConfig,
    area_downsample,
    preselect,
    signatures,
)

DEMO = Path(__file__).resolve().parents[1] / "runtime" / "demo_data"
SIZE = 16  # synthetic frames: (3, 16, 16), signature grid 8


def _textures(seed: int, count: int) -> np.ndarray:
    """``count`` independent random textures (3, SIZE, SIZE) uint8, well inside 0..255."""
    return np.random.default_rng(seed).integers(40, 216, size=(count, 3, SIZE, SIZE), dtype=np.uint8)


def _intervals(count: int, fps: float = 2.0) -> np.ndarray:
    start = np.arange(count) / fps
    return np.stack([start, start + 1 / fps], axis=1)


def _config(margin: float = 0.0, dup: float = 0.98) -> PreselectConfig:
    return PreselectConfig(margin=margin, duplicate_similarity=dup, grid=8)


videos = st.builds(
    lambda seed, scenes, lengths: np.concatenate([np.repeat(_textures(seed + i, 1), n, axis=0) for i, n in enumerate(lengths[:scenes])]),
    st.integers(0, 10_000), st.integers(1, 6), st.lists(st.integers(1, 12), min_size=6, max_size=6),
)


@settings(max_examples=60, deadline=None)
@given(images=videos, margin=st.sampled_from([0.0, 0.25, 0.5, 1.0]), dup=st.sampled_from([0.9, 0.98, 1.0]),
       noise=st.integers(0, 3))
def test_never_more_than_the_limit_sorted_unique(images: np.ndarray, margin: float, dup: float, noise: int) -> None:
    images = np.clip(images.astype(np.int16) + np.random.default_rng(noise).integers(-noise, noise + 1, images.shape), 0, 255).astype(np.uint8)
    count = len(images)
    duration = count / 2.0
    keep = preselect(images, _intervals(count), duration, _config(margin, dup))
    limit = max(1, math.ceil(math.ceil(duration - 1e-9) * (1 + margin) - 1e-9))  # independent of PreselectConfig.limit
    assert keep.dtype == np.int64 and 1 <= len(keep) <= min(limit, count)
    assert np.all(np.diff(keep) > 0) and keep[0] >= 0 and keep[-1] < count
    if count <= limit:
        assert np.array_equal(keep, np.arange(count))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(3, 40))
def test_identical_frames_collapse_to_one(seed: int, count: int) -> None:
    images = np.repeat(_textures(seed, 1), count, axis=0)
    assert preselect(images, _intervals(count), 1.0, _config(margin=0.5)).tolist() == [0]  # limit 2 < count


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), first=st.integers(2, 20), second=st.integers(2, 20), margin=st.sampled_from([0.0, 0.5]))
def test_a_scene_change_is_always_kept(seed: int, first: int, second: int, margin: float) -> None:
    a, b = _textures(seed, 2)
    images = np.concatenate([np.repeat(a[None], first, axis=0), np.repeat(b[None], second, axis=0)])
    # two scenes of identical frames: exactly the first frame of each survives
    keep = preselect(images, _intervals(len(images)), 2.0, _config(margin))
    assert keep.tolist() == [0, first]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(4, 30), shift=st.integers(-30, 30))
def test_depends_only_on_the_videos_own_frames(seed: int, count: int, shift: int) -> None:
    images = _textures(seed, count)
    other = _textures(seed + 1, 2 * count)
    config = _config(0.25, 0.98)
    first = preselect(images, _intervals(count), count / 2, config)
    preselect(other, _intervals(2 * count), count, config)  # another video in between changes nothing
    assert np.array_equal(preselect(images, _intervals(count), count / 2, config), first)
    # a brightness change (no clipping) is not content change
    brighter = (images.astype(np.int16) + shift).astype(np.uint8)
    assert np.array_equal(preselect(brighter, _intervals(count), count / 2, config), first)


@settings(max_examples=30, deadline=None)
@given(images=videos, dup=st.sampled_from([0.5, 0.98, 1.0]))
def test_a_large_margin_keeps_everything(images: np.ndarray, dup: float) -> None:
    count = len(images)
    keep = preselect(images, _intervals(count), count / 2.0, _config(margin=1.0 + count, dup=dup))
    assert np.array_equal(keep, np.arange(count))


def test_the_most_novel_frames_are_kept() -> None:
    """Four scenes, budget for four frames: a frame from each scene, not the first four of one."""
    scenes = _textures(7, 4)
    images = np.concatenate([np.repeat(s[None], 5, axis=0) for s in scenes])
    keep = preselect(images, _intervals(20), 4.0, _config(margin=0.0, dup=1.0))  # no pruning: change alone
    assert keep.tolist() == [0, 5, 10, 15]


def test_flat_frames_collapse_and_stay_apart_from_textured_ones() -> None:
    black = np.zeros((1, 3, SIZE, SIZE), np.uint8)
    white = np.full((1, 3, SIZE, SIZE), 255, np.uint8)
    textured = _textures(3, 1)
    sig = signatures(np.concatenate([black, white, textured]), _config())
    np.testing.assert_allclose(np.linalg.norm(sig, axis=1), 1.0, rtol=1e-6)
    assert sig[0] @ sig[1] == pytest.approx(1.0) and abs(sig[0] @ sig[2]) < 1e-6


def test_area_downsample_is_the_block_mean() -> None:
    images = _textures(1, 2)
    expected = np.array([[[[images[k, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(8)] for i in range(8)]
                          for c in range(3)] for k in range(2)])
    np.testing.assert_allclose(area_downsample(images, 8), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=re.escape("signature grid 5 must divide the frame size 16x16")):
        area_downsample(images, 5)


def test_unknown_duration_falls_back_to_the_last_interval() -> None:
    images = _textures(2, 10)
    assert np.array_equal(preselect(images, _intervals(10), 0.0, _config()), preselect(images, _intervals(10), 5.0, _config()))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"margin": -0.1}, "preselect margin must be a finite number >= 0, got -0.1"),
    ({"margin": float("nan")}, "preselect margin must be a finite number >= 0, got nan"),
    ({"kind": "hsv"}, "preselect kind must be one of ('rgb', 'luma'), got 'hsv'"),
    ({"grid": 0}, "preselect grid must be >= 1, got 0"),
    ({"duplicate_similarity": 1.5}, "preselect duplicate_similarity must be in [-1, 1], got 1.5"),
])
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PreselectConfig(**kwargs)


def test_mismatched_intervals_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=re.escape("intervals must be (4, 2) for 4 images, got (3, 2)")):
        preselect(_textures(0, 4), _intervals(3), 2.0, _config())


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "abc"])
def test_cli_rejects_bad_margins(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.pipeline.extractor import ExtractorConfig

    parser = argparse.ArgumentParser()
    ExtractorConfig.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--preselect-margin", value])
    assert "argument --preselect-margin: expected a" in capsys.readouterr().err
    config = ExtractorConfig.from_args(parser.parse_args(["--preselect-margin", "0.5", "--descriptors-per-second", "0.5"]))
    assert config.preselect() == PreselectConfig(margin=0.5, descriptors_per_second=0.5)
    assert ExtractorConfig().preselect() is None
    with pytest.raises(ValueError, match="--preselect-margin runs on the CPU path"):
        config.resolve("gpu")


def _embed(tasks: list, preselect_config: PreselectConfig | None) -> dict:
    from runtime.decode.pyav import PyAVDecoder
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.model_manifest import ModelManifest, default_model_dir
    from runtime.pipeline.devices import build_host_pipeline
    from runtime.pipeline.extractor import preprocess_config
    from runtime.sampling import SamplingPolicy

    manifest = ModelManifest.load(default_model_dir())
    pipeline = build_host_pipeline(PyAVDecoder(), OnnxRuntimeBackend(manifest.onnx_path, intra_op_threads=1),
                                   SamplingPolicy(fps=2.0), preprocess_config(manifest), batch_size=8, preselect=preselect_config)
    return {r.video_id: r for r in pipeline.run(tasks)}


def test_host_session_hook_on_a_real_clip() -> None:
    from runtime.io.dataset import video_tasks

    tasks = video_tasks(DEMO, "reference")[:2]
    full = _embed(tasks, None)
    everything = _embed(tasks, PreselectConfig(margin=10.0))
    cut = _embed(tasks, PreselectConfig(margin=0.0))
    for task in tasks:
        f, e, c = full[task.video_id], everything[task.video_id], cut[task.video_id]
        assert f.sampled is None and e.sampled == c.sampled == len(f.intervals) > 0
        # a margin that keeps every frame changes nothing: the same rows, the same descriptors
        assert np.array_equal(e.intervals, f.intervals) and np.array_equal(e.embeddings, f.embeddings)
        # margin 0: at most ceil(duration) rows, each exactly one of the full run's
        assert 0 < len(c.intervals) <= math.ceil(f.info.duration) < len(f.intervals)
        rows = [int(np.flatnonzero((f.intervals == row).all(axis=1))[0]) for row in c.intervals]
        assert rows == sorted(set(rows))
        np.testing.assert_allclose(c.embeddings, f.embeddings[rows], atol=1e-5)
