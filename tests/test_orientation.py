"""The orientation probe (``runtime.postprocess.orientation``) and the turned views it adds (``runtime.pipeline.turned_views``).

Unit tests use a fake backend whose "embedding" measures where a bright band lies in the image, so
the upright direction is known independently of the code under test; the end-to-end tests turn real
footage with the dataset's own ``rotate90`` edit (``benchmarks.edits``) and run the shipped model and
probe through the CPU pipeline with ``--layout-views``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.pipeline.turned_views import TurnedViews
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.layout_budget import LayoutPostprocessor
from runtime.postprocess.orientation import (
    CANDIDATE_TURNS,
    PROBE_FILE,
    OrientationProbe,
    probe_indices,
)
from runtime.records import VideoEmbeddings, VideoInfo

SIDE = 16
UPRIGHT = OrientationProbe(np.array([1.0, -1.0, -1.0, -1.0], np.float32), 0.0, screen_logit=0.0, margin=0.5)


class _BandBackend:
    """Embeds an image as the brightness of its top, left, bottom and right bands (a band on top = upright)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        x = images.astype(np.float32).mean(axis=1)
        band = SIDE // 4
        return np.stack([x[:, :band].mean((1, 2)), x[:, :, :band].mean((1, 2)), x[:, -band:].mean((1, 2)), x[:, :, -band:].mean((1, 2))], 1) + 1.0


def _images(side: str, count: int) -> np.ndarray:
    """``count`` uint8 (3, SIDE, SIDE) images with a bright band on ``side`` (top/left/bottom/right) and some noise."""
    rng = np.random.default_rng(len(side) * 100 + count)
    images = rng.integers(0, 20, (count, 3, SIDE, SIDE)).astype(np.uint8)
    band = {"top": np.s_[:, :, : SIDE // 4], "left": np.s_[:, :, :, : SIDE // 4],
            "bottom": np.s_[:, :, -SIDE // 4 :], "right": np.s_[:, :, :, -SIDE // 4 :]}[side]
    images[band] = 250
    return images


def _video(images: np.ndarray, backend: _BandBackend) -> VideoEmbeddings:
    count = len(images)
    intervals = np.stack([np.arange(count) * 0.5, np.arange(count) * 0.5 + 0.5], 1)
    return VideoEmbeddings("v", intervals, backend.infer(images), VideoInfo("v.mp4", count * 0.5, 2.0, SIDE, SIDE, "h264"),
                           layout={"kind": "plain", "windows": [{"kind": "plain", "views": [{"kind": "whole", "rect": [0, 0, SIDE, SIDE]}]}
                                                                 for _ in range(math.ceil(count / 12))]},
                           inputs=images)


def _turns_to_top(side: str) -> int:
    """Quarter turns (np.rot90 on the image plane) bringing a band on ``side`` to the top, found by trying them."""
    image = _images(side, 1)
    return next(k for k in range(4) if np.rot90(image, k, axes=(2, 3))[0, :, : SIDE // 4].mean() > 200)


def test_logits_are_the_linear_score_of_the_l2_normalised_embedding():
    rng = np.random.default_rng(0)
    weights, embeddings = rng.normal(size=8).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32) * 3
    probe = OrientationProbe(weights, 0.25, 0.0, 0.5)
    expected = [float(np.dot(e / np.linalg.norm(e), weights)) + 0.25 for e in embeddings]
    np.testing.assert_allclose(probe.logits(embeddings), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="embeddings must be"):
        probe.logits(embeddings[:, :4])


def test_a_probe_survives_save_and_load_and_bad_files_are_refused(tmp_path):
    probe = OrientationProbe(np.arange(4, dtype=np.float32), -0.5, 0.1, 0.7, ("abc", "def"), flip_margin=1.0)
    probe.save(tmp_path / PROBE_FILE)
    loaded = OrientationProbe.load(tmp_path / PROBE_FILE)
    assert np.array_equal(loaded.weights, probe.weights) and (loaded.bias, loaded.screen_logit, loaded.margin) == (-0.5, 0.1, 0.7)
    assert loaded.model_sha256 == ("abc", "def") and loaded.flip_margin == 1.0
    OrientationProbe(probe.weights, 0.0, 0.0, 0.5).save(tmp_path / "no_flips.npz")
    assert OrientationProbe.load(tmp_path / "no_flips.npz").flip_margin is None
    np.savez(tmp_path / "other.npz", weights=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="not an orientation probe"):
        OrientationProbe.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="float32"):
        OrientationProbe(np.ones(3), 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        OrientationProbe(np.array([np.nan], np.float32), 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="margin"):
        OrientationProbe(np.ones(3, np.float32), 0.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="flip_margin"):
        OrientationProbe(np.ones(3, np.float32), 0.0, 0.0, 0.5, flip_margin=-1.0)


@given(st.integers(0, 200), st.integers(1, 8))
def test_probe_indices_are_spread_over_the_window(count, samples):
    picked = probe_indices(count, samples)
    assert len(picked) == min(count, samples) and np.all(np.diff(picked) > 0)
    if count:
        assert picked[0] == 0 and picked[-1] == count - 1 if count >= 2 and samples >= 2 else picked[0] == 0


logit_lists = st.lists(st.floats(-5, 5), min_size=1, max_size=6)


@given(logit_lists, logit_lists, logit_lists, logit_lists, st.floats(0, 2), st.none() | st.floats(0, 2))
def test_a_window_is_turned_only_when_a_turn_beats_its_rivals_by_its_margin(up, one, three, half, margin, flip_margin):
    probe = OrientationProbe(np.ones(2, np.float32), 0.0, 0.0, margin, flip_margin=flip_margin)
    upside_down = flip_margin is not None
    turns, gain = probe.decide(np.array(up), {1: np.array(one), 3: np.array(three), 2: np.array(half)})
    m = {0: np.mean(up), 1: np.mean(one), 3: np.mean(three), 2: np.mean(half)}
    # a quarter turn's rivals: as it is and the half turn; the half turn's (only with upside_down): every other
    gains = {1: m[1] - max(m[0], m[2]), 3: m[3] - max(m[0], m[2])} | ({2: m[2] - max(m[0], m[1], m[3])} if upside_down else {})
    best = max(gains.values())
    assert gain == pytest.approx(best)
    assert turns in (0, *CANDIDATE_TURNS, *((2,) if upside_down else ()))
    winner = max(gains, key=lambda k: (gains[k], -k))
    assert turns == (winner if best > (flip_margin if winner == 2 else margin) else 0)


def test_a_turned_window_gets_the_inputs_turned_back_as_a_view_and_an_upright_one_is_left_alone():
    backend = _BandBackend()
    upright, turned = _images("top", 12), _images("left", 12)
    video = _video(np.concatenate([upright, turned]), backend)
    backend.calls.clear()
    out = TurnedViews(UPRIGHT, backend, window_samples=12)(video)
    k = _turns_to_top("left")
    assert out.inputs is None
    # window 0 passes the screen (nothing embedded for it); window 1: 4 probe samples x 3 turns, then its 8 others once
    assert backend.calls == [12, 8]
    assert out.views.tolist() == [0] * 12 + [0, 1] * 12 and out.windows.tolist() == [0] * 12 + [1] * 24
    assert np.array_equal(out.intervals[12::2], video.intervals[12:]) and np.array_equal(out.intervals[13::2], video.intervals[12:])
    np.testing.assert_allclose(out.embeddings[13::2], backend.infer(np.rot90(turned, k, axes=(2, 3))), rtol=1e-5)
    np.testing.assert_array_equal(out.embeddings[:12], video.embeddings[:12])
    window = out.layout["windows"][1]
    assert window["kind"] == "turned" and window["views"][-1] == {"kind": "turned", "rect": [0, 0, SIDE, SIDE], "quarter_turns": k}
    assert window["orientation_gain"] > UPRIGHT.margin and "orientation_gain" not in out.layout["windows"][0]
    assert out.layout["orientation"]["turned_windows"] == [1] and out.layout["kind"] == "plain+turned"
    # the budget: the turned window's descriptors are its turned rows (they replace its whole frames), the cap is kept
    descriptors = LayoutPostprocessor(None, BudgetConfig(1.0, 1.0))(out, 12.0)
    assert len(descriptors) == 12
    turned_rows = out.embeddings[13::2] / np.linalg.norm(out.embeddings[13::2], axis=1, keepdims=True)
    later = descriptors.features[descriptors.timestamps[:, 0] >= 6.0]
    assert len(later) == 6 and all(np.abs(turned_rows - row).max(axis=1).min() < 1e-6 for row in later)


def test_an_upside_down_window_is_flipped_back_when_the_probe_says_so():
    backend = _BandBackend()
    upside_down = _images("bottom", 12)
    video = _video(upside_down, backend)
    probe = OrientationProbe(UPRIGHT.weights, UPRIGHT.bias, UPRIGHT.screen_logit, UPRIGHT.margin, flip_margin=0.5)
    out = TurnedViews(probe, backend, window_samples=12)(video)
    assert out.views.tolist() == [0, 1] * 12
    np.testing.assert_allclose(out.embeddings[1::2], backend.infer(upside_down[:, :, ::-1]), rtol=1e-5)  # the band back on top
    (window,) = out.layout["windows"]
    assert window["kind"] == "flipped" and window["views"][-1] == {"kind": "flipped", "rect": [0, 0, SIDE, SIDE], "quarter_turns": 0}


@pytest.mark.parametrize("side", ["bottom", "top"])
def test_upside_down_and_upright_windows_get_no_turned_view(side):
    backend = _BandBackend()
    video = _video(_images(side, 12), backend)
    out = TurnedViews(UPRIGHT, backend, window_samples=12)(video)
    assert out.views is None and out.windows is None and out.inputs is None
    assert np.array_equal(out.embeddings, video.embeddings)
    assert out.layout["orientation"]["turned_windows"] == []


def test_split_windows_and_results_without_inputs_are_not_probed():
    backend = _BandBackend()
    video = _video(_images("left", 12), backend)
    assert TurnedViews(UPRIGHT, backend, 12)(VideoEmbeddings(video.video_id, video.intervals, video.embeddings, video.info)) is not None
    split = VideoEmbeddings(video.video_id, np.repeat(video.intervals, 2, 0), np.repeat(video.embeddings, 2, 0), video.info,
                            views=np.tile(np.array([0, 1], np.int16), 12), windows=np.zeros(24, np.int32), layout=video.layout,
                            inputs=np.repeat(video.inputs, 2, 0))
    backend.calls.clear()
    out = TurnedViews(UPRIGHT, backend, 12)(split)
    assert backend.calls == [] and np.array_equal(out.views, split.views) and out.inputs is None


# --- end to end: the shipped model and probe on real footage ---------------------------------------------


@pytest.fixture(scope="module")
def rotated_videos(tmp_path_factory) -> dict[str, Path]:
    from tests.test_layout import pillarboxed_turned_clip
    from tests.test_layout_pipeline import _clip, _edited, _write

    root = tmp_path_factory.mktemp("turned")
    return {
        "turned_ccw": _write(root / "turned_ccw.mp4", _edited("rotate90", {"k": 1}, copy="R100001")),
        "turned_cw": _write(root / "turned_cw.mp4", _edited("rotate90", {"k": 3}, copy="R100001")),
        "pillarboxed": _write(root / "pillarboxed.mp4", pillarboxed_turned_clip("R100001")),
        "plain": _write(root / "plain.mp4", _clip("R100001")),
    }


@pytest.mark.slow
def test_the_shipped_probe_turns_rotated_footage_back_and_leaves_the_original_alone(rotated_videos):
    from runtime.pipeline.extractor import ExtractorConfig, build_extractor
    from runtime.records import VideoTask

    extractor = build_extractor(ExtractorConfig(device="cpu", layout_views=True, score_normalization=False))
    results = {r.video_id: r for r in extractor.run([VideoTask(n, p, None) for n, p in rotated_videos.items()])}
    plain = results["plain"]
    assert plain.views is None and plain.inputs is None and plain.layout["orientation"]["turned_windows"] == []
    for name, edit_turns in (("turned_ccw", 1), ("turned_cw", 3), ("pillarboxed", 1)):
        video = results[name]
        (window,) = video.layout["windows"]
        assert window["kind"] == "turned" and window["views"][-1]["quarter_turns"] == (4 - edit_turns) % 4, window
        assert window["views"][-1]["rect"] == window["views"][0]["rect"]  # the content (bars cropped) turned back
        turned, whole = video.embeddings[video.views == 1], video.embeddings[video.views == 0]
        # turned back, the copy embeds like the original footage; as it is, it does not
        similarity_back = np.sum(turned * plain.embeddings, axis=1)
        similarity_as_is = np.sum(whole * plain.embeddings, axis=1)
        assert similarity_back.mean() > 0.9 and similarity_back.mean() > similarity_as_is.mean() + 0.1, (similarity_back, similarity_as_is)


@pytest.mark.slow
def test_the_extractor_refuses_a_probe_fitted_for_another_model(tmp_path):
    import shutil

    from runtime.model_manifest import default_model_dir
    from runtime.pipeline.extractor import ExtractorConfig, build_extractor

    model_dir = tmp_path / "model"
    shutil.copytree(default_model_dir(), model_dir)
    OrientationProbe(np.ones(1280, np.float32), 0.0, 0.0, 0.5, ("0" * 64,)).save(model_dir / PROBE_FILE)
    with pytest.raises(ValueError, match="fitted for other models"):
        build_extractor(ExtractorConfig(device="cpu", model_dir=model_dir, layout_views=True))
    (model_dir / PROBE_FILE).unlink()
    with pytest.raises(ValueError, match="--no-orientation-probe"):
        build_extractor(ExtractorConfig(device="cpu", model_dir=model_dir, layout_views=True))
    assert build_extractor(ExtractorConfig(device="cpu", model_dir=model_dir, layout_views=True, orientation_probe=False)).turned_views is None


@pytest.mark.slow
@pytest.mark.parametrize("cap", [0, 1, 2**30])
def test_the_pipeline_keeps_the_inputs_only_within_the_cap(rotated_videos, cap):
    from runtime.decode.pyav import PyAVDecoder
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.pipeline.devices import build_host_pipeline
    from runtime.pipeline.extractor import load_manifest, preprocess_config
    from runtime.records import VideoTask
    from runtime.sampling import SamplingPolicy

    manifest = load_manifest(None, "int8")
    pipeline = build_host_pipeline(PyAVDecoder(), OnnxRuntimeBackend(manifest.onnx_path), SamplingPolicy(fps=2.0),
                                   preprocess_config(manifest), keep_inputs_bytes=cap)
    (video,) = list(pipeline.run([VideoTask("plain", rotated_videos["plain"], None)]))
    if cap == 2**30:  # the rows' own inputs, in row order
        assert video.inputs.shape == (len(video.embeddings), 3, 224, 224) and video.inputs.dtype == np.uint8
        np.testing.assert_allclose(pipeline.engine.backend.infer(video.inputs), video.embeddings, atol=1e-5)
        assert not video.notes
    else:
        assert video.inputs is None
        assert any("not kept" in note for note in video.notes) == (cap > 0)
