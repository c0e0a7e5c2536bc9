"""Layout views as an option of the one pipeline (``--layout-views``), end to end on real footage.

Small videos are made with the dataset's own edit functions (``benchmarks.edits``: hstack,
picture_in_picture, pad) from the demo footage and encoded with PyAV; the expected rectangles
come from the edit parameters, independently of the analysis. Through the shipped model: the
rows per frame and their views, the per-video budget, a plain video unchanged (byte-identical
descriptors with the option off), the second decode pass equal to the one-pass capture, the
command-line flag on queries and references (decision in the per-video result, never on a
challenge-mode console) and the GPU path refusing it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from benchmarks.edits import EDIT_REGISTRY, EditContext, resize_frame
from runtime.cli import main
from runtime.decode.pyav import PyAVDecoder
from runtime.io.descriptors import load_descriptors, validate_descriptor_file
from runtime.pipeline.extractor import (
    ExtractorConfig,
    build_extractor,
    load_manifest,
    load_postprocessor,
    preprocess_config,
)
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.layout_budget import LayoutPostprocessor
from runtime.preprocess.layout import LayoutSettings, window_bounds
from runtime.records import VideoEmbeddings, VideoTask
from runtime.sampling import SamplingPolicy

DEMO = Path(__file__).resolve().parents[1] / "runtime" / "demo_data" / "reference"
W, H = 640, 360
FRAMES = 12  # at 2 frames/s: 6 s videos
TOL = 4  # pixels

# The edits and the rectangles they put the copy in (frame coordinates after the squash to W x H).
PIP = {"mode": "copy_inset", "size": 0.6, "x": 0.3, "y": 0.7}
PIP_RECT = (int(0.3 * (W - int(0.6 * W))), int(0.7 * (H - int(0.6 * H))),
            int(0.3 * (W - int(0.6 * W))) + int(0.6 * W), int(0.7 * (H - int(0.6 * H))) + int(0.6 * H))
PAD = {"top": 0.2, "bottom": 0.2, "left": 0.0, "right": 0.0, "color": [0, 0, 0]}
PAD_CONTENT = (0, 0.2 * H * H / (1.4 * H), W, H - 0.2 * H * H / (1.4 * H))
STACK_CELLS = [(0, 0, W // 2, H), (W // 2, 0, W, H)]


def _clip(name: str, frames: int = FRAMES) -> list[np.ndarray]:
    """``frames`` RGB frames of a demo reference, 0.5 s apart, squashed to W x H."""
    out = []
    with av.open(str(DEMO / f"{name}.mp4")) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if float(frame.pts * stream.time_base) + 1e-6 >= 0.5 * len(out):
                out.append(resize_frame(frame.to_ndarray(format="rgb24"), W, H))
            if len(out) == frames:
                return out
    raise AssertionError(f"{name}: fewer than {frames} frames")


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def _edited(edit: str, params: dict, copy: str = "R100000", other: str = "R100003", frames: int = FRAMES) -> list[np.ndarray]:
    return [resize_frame(EDIT_REGISTRY[edit].apply(a, params, EditContext(k, 0, b)), W, H)
            for k, (a, b) in enumerate(zip(_clip(copy, frames), _clip(other, frames)))]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {
        "stack": _write(root / "stack.mp4", _edited("hstack", {"other_width": 1.0, "other_first": True})),
        "pip": _write(root / "pip.mp4", _edited("picture_in_picture", PIP)),
        "pad": _write(root / "pad.mp4", _edited("pad", PAD)),
        "plain": _write(root / "plain.mp4", _clip("R100002")),
    }


@pytest.fixture(scope="module")
def extractors():
    """The shipped model with the option off and on (CPU path)."""
    return {on: build_extractor(ExtractorConfig(device="cpu", layout_views=on, score_normalization=False)) for on in (False, True)}


def _run(extractor, videos: dict[str, Path], names: list[str]) -> dict[str, VideoEmbeddings]:
    results = list(extractor.run([VideoTask(name, videos[name], None) for name in names]))
    assert all(isinstance(r, VideoEmbeddings) for r in results), results
    return {r.video_id: r for r in results}


def _near(actual, expected, tol: float = TOL) -> bool:
    return len(actual) == len(expected) and all(abs(a - e) <= tol for a, e in zip(actual, expected))


def test_views_are_embedded_per_frame_at_the_known_geometry_within_the_budget(videos, extractors):
    on = _run(extractors[True], videos, ["stack", "pip", "pad", "plain"])
    off = _run(extractors[False], videos, ["stack", "pip", "pad", "plain"])
    expected = {  # kind, the views' kinds and rects
        "stack": ("grid", ["whole", "cell", "cell"], [(0, 0, W, H), *STACK_CELLS]),
        "pip": ("window", ["whole", "window"], [(0, 0, W, H), PIP_RECT]),
        "pad": ("border", ["whole"], [PAD_CONTENT]),
        "plain": ("plain", ["whole"], [(0, 0, W, H)]),
    }
    for name, (kind, kinds, rects) in expected.items():
        video, whole = on[name], off[name]
        record = video.layout
        assert record["kind"] == kind, (name, record)
        assert record["analysis_seconds"] >= 0 and not record["second_pass"] and record["window_samples"] == LayoutSettings().window_samples
        (window,) = record["windows"]  # 12 samples: one window of 16
        assert window["kind"] == kind and window["samples"] == [0, FRAMES] and window["times"] == [0.0, 6.0]
        assert [v["kind"] for v in window["views"]] == kinds
        assert all(_near(v["rect"], r) for v, r in zip(window["views"], rects)), (name, window["views"])
        assert window["frames_analysed"] == FRAMES
        assert set(window["confidences"]) == {"border", "grid", "window", "rotated"}
        samples = len(whole.intervals)
        assert samples == FRAMES and whole.views is None and whole.layout is None
        if kind == "plain":
            assert video.views is None and video.windows is None and len(video.embeddings) == samples
            continue
        # every sample has one row per view, in views order, all with the sample's interval
        per_frame = len(kinds)
        assert video.views.dtype == np.int16 and video.views.tolist() == list(range(per_frame)) * samples
        assert video.windows.dtype == np.int32 and not video.windows.any()
        assert np.array_equal(video.intervals, np.repeat(whole.intervals, per_frame, axis=0))
        if kind != "border":  # the uncropped whole view is the whole frame's model input
            np.testing.assert_allclose(video.embeddings[video.views == 0], whole.embeddings, atol=1e-4)
        else:  # the cropped one is not
            assert np.abs(video.embeddings - whole.embeddings).max() > 1e-2
        projection = extractors[True].postprocessor.projection
        for similarity in (1.0, 0.9):  # without pruning the budget is filled, never exceeded
            descriptors = LayoutPostprocessor(projection, BudgetConfig(1.0, similarity))(video, None)
            cap = math.ceil(video.info.duration)
            assert len(descriptors) <= cap and (similarity < 1 or len(descriptors) == cap), (name, len(descriptors), cap)


def test_a_plain_video_gives_the_same_bytes_with_the_option_on(videos, extractors):
    off, on = (_run(extractors[flag], videos, ["plain"])["plain"] for flag in (False, True))
    assert on.views is None and on.windows is None and on.layout["kind"] == "plain"
    assert np.array_equal(on.embeddings, off.embeddings) and np.array_equal(on.intervals, off.intervals)
    a, b = (extractors[flag].finalize(video, 6.0) for flag, video in ((False, off), (True, on)))
    assert a.features.tobytes() == b.features.tobytes() and a.timestamps.tobytes() == b.timestamps.tobytes()


class _PlanSession:
    """A decode session writing ``rows`` of a plan with the given views (the scheduler's side of the contract)."""

    name, stream = "fake", None

    def __init__(self, views: np.ndarray, rows: list[int], windows: np.ndarray | None = None) -> None:
        self.views, self.rows, self.windows = views, rows, windows

    def decode_into(self, path: str, sink) -> None:
        from runtime.decode.base import VideoPlan
        from runtime.records import VideoInfo

        intervals = np.repeat(np.arange(2, dtype=np.float64)[:, None] + [0.0, 1.0], 2, axis=0)
        sink.start(VideoPlan(VideoInfo(path, 2.0, 2.0, 32, 32, "h264"), intervals, "fake", views=self.views, layout={"kind": "grid"},
                                  windows=self.windows))
        for row in self.rows:
            sink.write(row, lambda buffer, slot, stream, row=row: buffer.__setitem__(slot, row))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("overlap", [True, False])
def test_the_scheduler_keeps_each_rows_view(overlap):
    from runtime.device.host import HostOps
    from runtime.pipeline.host import BackendEngine
    from runtime.pipeline.scheduler import Pipeline
    from tests.test_cpu_pipeline import PoolingBackend

    def run(views, rows, windows=None):
        pipeline = Pipeline(lambda worker: _PlanSession(views, rows, windows), BackendEngine(PoolingBackend(), 4), HostOps(), (3, 32, 32),
                            num_workers=1, batch_size=4, overlap=overlap)
        (result,) = pipeline.run([VideoTask("V", Path("v.mp4"), None)])
        return result

    views = np.array([0, 1, 0, 1], np.int16)
    result = run(views, [0, 1, 3])  # row 2 was not decoded: its view goes with it
    assert result.views.tolist() == [0, 1, 1] and result.intervals[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert result.layout == {"kind": "grid"} and result.windows is None
    windowed = run(views, [0, 2, 3], np.array([0, 0, 1, 1], np.int32))  # row 1 was not decoded
    assert windowed.windows.tolist() == [0, 1, 1] and windowed.views.tolist() == [0, 0, 1]
    failure = run(np.zeros(3, np.int16), [0, 1, 2, 3])
    assert failure.stage == "decode" and "plan.views must have shape (4,) (one view per row), got (3,)" in failure.message
    failure = run(views, [0, 1, 2, 3], np.zeros(5, np.int32))
    assert failure.stage == "decode" and "plan.windows must have shape (4,) (one window per row), got (5,)" in failure.message


@pytest.mark.parametrize("name", ["stack", "pip"])
def test_the_second_decode_pass_gives_the_one_pass_rows(videos, name):
    policy, preprocess, settings = SamplingPolicy(fps=2.0), preprocess_config(load_manifest(None, "fp32")), LayoutSettings()
    one = PyAVDecoder().decode(videos[name], policy, preprocess, layout=settings)
    two = PyAVDecoder(layout_capture_bytes=1).decode(videos[name], policy, preprocess, layout=settings)
    assert not one.layout["second_pass"] and two.layout["second_pass"]
    assert np.array_equal(one.images, two.images) and np.array_equal(one.views, two.views)
    assert one.windows is not None and np.array_equal(one.windows, two.windows)
    assert np.array_equal(one.intervals, two.intervals)
    assert {k: v for k, v in one.layout.items() if not k.endswith(("seconds", "pass"))} == \
        {k: v for k, v in two.layout.items() if not k.endswith(("seconds", "pass"))}


def test_the_second_pass_gives_the_same_descriptors_through_the_pipeline(videos):
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.pipeline.devices import build_layout_host_pipeline

    manifest = load_manifest(None, "fp32")
    backend = OnnxRuntimeBackend(manifest.onnx_path, batch_size=16)
    tasks = [VideoTask(name, videos[name], None) for name in ("pip", "stack")]
    runs = []
    for options in (None, {"layout_capture_bytes": 1}):
        pipeline = build_layout_host_pipeline(backend, SamplingPolicy(fps=2.0), preprocess_config(manifest), batch_size=16,
                                              decoder_options=options)
        runs.append(list(pipeline.run(tasks)))
    post = load_postprocessor(manifest, BudgetConfig(1.0, 0.9), layout_views=True)
    assert isinstance(post, LayoutPostprocessor)
    for one, two in zip(*runs):
        assert not one.layout["second_pass"] and two.layout["second_pass"]
        assert np.array_equal(one.views, two.views) and np.array_equal(one.embeddings, two.embeddings)
        assert np.array_equal(one.windows, two.windows)
        a, b = post(one, 6.0), post(two, 6.0)
        assert a.features.tobytes() == b.features.tobytes() and a.timestamps.tobytes() == b.timestamps.tobytes()


# A copy that is a segment of the video: 8 s of plain footage, then 8 s of an hstack (2 frames/s).
MIXED_PLAIN = 16  # samples before the stack
WINDOW = 8  # samples per layout window: windows 0 and 1 plain, 2 and 3 stacked


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    stack = _edited("hstack", {"other_width": 1.0, "other_first": True}, frames=MIXED_PLAIN)
    return _write(tmp_path_factory.mktemp("mixed") / "mixed.mp4", _clip("R100002", MIXED_PLAIN) + stack)


def _decode_mixed(mixed: Path, layout: LayoutSettings | None, **options):
    return PyAVDecoder(**options).decode(mixed, SamplingPolicy(fps=2.0), preprocess_config(load_manifest(None, "fp32")), layout=layout)


def test_views_are_decided_per_window_of_samples(mixed):
    whole = _decode_mixed(mixed, None)
    video = _decode_mixed(mixed, LayoutSettings(window_samples=WINDOW))
    samples = 2 * MIXED_PLAIN
    assert len(whole.intervals) == samples
    record = video.layout
    assert record["kind"] == "grid+plain" and record["window_samples"] == WINDOW and not record["second_pass"]
    windows = record["windows"]
    assert [w["samples"] for w in windows] == [[a, a + WINDOW] for a in range(0, samples, WINDOW)]
    assert [w["times"] for w in windows] == [[a / 2, (a + WINDOW) / 2] for a in range(0, samples, WINDOW)]
    assert [w["kind"] for w in windows] == ["plain", "plain", "grid", "grid"], [(w["kind"], w["confidences"]) for w in windows]
    for window in windows[2:]:
        assert [v["kind"] for v in window["views"]] == ["whole", "cell", "cell"]
        assert all(_near(v["rect"], r) for v, r in zip(window["views"], [(0, 0, W, H), *STACK_CELLS])), window["views"]
        assert window["frames_analysed"] == WINDOW
    # a plain window's samples have 1 row, a stacked window's 3 (whole + 2 cells), rows of a sample together
    per_sample = np.array([1] * MIXED_PLAIN + [3] * MIXED_PLAIN)
    assert video.views.dtype == np.int16 and video.windows.dtype == np.int32
    assert video.views.tolist() == [0] * MIXED_PLAIN + [0, 1, 2] * MIXED_PLAIN
    assert video.windows.tolist() == np.repeat(np.arange(samples) // WINDOW, per_sample).tolist()
    assert np.array_equal(video.intervals, np.repeat(whole.intervals, per_sample, axis=0))
    # the whole (uncropped) views are the whole-frame model inputs, the cells are not
    assert np.array_equal(video.images[video.views == 0], whole.images)
    cells = video.images[video.views != 0].reshape(MIXED_PLAIN, 2, *whole.images.shape[1:])
    assert np.abs(cells[:, 0].astype(int) - whole.images[MIXED_PLAIN:]).mean() > 10


def test_per_window_views_with_a_second_pass_or_a_small_capture_give_the_same_rows(mixed):
    layout = LayoutSettings(window_samples=WINDOW)
    one = _decode_mixed(mixed, layout)
    frame_bytes = W * H * 3 // 2
    # planes of the plain windows are dropped once decided: 20 frames' worth hold the 16 stacked ones
    small = _decode_mixed(mixed, layout, layout_capture_bytes=20 * frame_bytes)
    two = _decode_mixed(mixed, layout, layout_capture_bytes=1)
    assert not one.layout["second_pass"] and not small.layout["second_pass"] and two.layout["second_pass"]
    for other in (small, two):
        assert np.array_equal(one.images, other.images) and np.array_equal(one.intervals, other.intervals)
        assert np.array_equal(one.views, other.views) and np.array_equal(one.windows, other.windows)
        assert one.layout["windows"] == other.layout["windows"]


def test_per_window_views_through_the_pipeline_stay_within_the_budget(mixed, extractors):
    config = ExtractorConfig(device="cpu", layout_views=True, layout_window=WINDOW, score_normalization=False)
    extractor = build_extractor(config)
    assert extractor.fingerprint()["layout"]["window_samples"] == WINDOW
    assert extractors[True].fingerprint()["layout"]["window_samples"] == LayoutSettings().window_samples == 12
    (video,) = _run(extractor, {"mixed": mixed}, ["mixed"]).values()
    (whole,) = _run(extractors[False], {"mixed": mixed}, ["mixed"]).values()
    assert video.windows.tolist() == np.repeat(np.arange(32) // WINDOW, [1] * 16 + [3] * 16).tolist()
    assert len(video.views) == len(video.windows) == len(video.embeddings) == 16 + 3 * 16
    np.testing.assert_allclose(video.embeddings[video.views == 0], whole.embeddings, atol=1e-4)
    cap = math.ceil(video.info.duration)
    assert cap == 16
    for similarity in (1.0, 0.9):
        post = LayoutPostprocessor(extractor.postprocessor.projection, BudgetConfig(1.0, similarity))
        descriptors = post(video, None)
        assert len(descriptors) <= cap and (similarity < 1 or len(descriptors) == cap), (similarity, len(descriptors))
        assert np.all(np.diff(descriptors.timestamps[:, 0]) >= 0)  # time order
        if similarity == 1.0:  # picture-seconds 16 (plain) : 16 : 16 (two stacked windows of 8 x 2) -> 16/3 each,
            assert np.count_nonzero(descriptors.timestamps[:, 0] < 8.0) == 6  # the remainder slot to the earliest group
    # without windows the same rows go through the per-view budget (the old path), also within the cap
    from dataclasses import replace

    assert len(LayoutPostprocessor(extractor.postprocessor.projection, BudgetConfig(1.0, 1.0))(replace(video, windows=None), None)) == cap


def test_the_window_setting_is_validated():
    with pytest.raises(ValueError, match=re.escape("window_samples must be an integer >= 0 (0 = the whole video), got -1")):
        LayoutSettings(window_samples=-1)
    with pytest.raises(SystemExit):
        main(["extract", "--videos", ".", "--out", "x", "--layout-views", "--layout-window", "-1"])
    with pytest.raises(SystemExit):
        main(["extract", "--videos", ".", "--out", "x", "--layout-views", "--layout-window", "two"])


@hypothesis_settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 200), size=st.integers(0, 40))
def test_window_bounds_cover_the_samples_in_order(count, size):
    bounds = window_bounds(count, size)
    assert [k for a, b in bounds for k in range(a, b)] == list(range(count))  # each sample once, in order
    assert all(b > a for a, b in bounds) or bounds == [(0, 0)]
    if size == 0 or count <= size:
        assert bounds == [(0, count)]
    else:
        assert all(b - a >= min(count, size // 2) for a, b in bounds)
        assert all(b - a == size for a, b in bounds[:-1])  # only the last may differ
        assert size // 2 <= bounds[-1][1] - bounds[-1][0] <= max(size, size + size // 2 - 1)  # a joined tail is < size // 2
        assert len(bounds) == max(1, count // size + (count % size >= size // 2 and count % size > 0))


def test_window_bounds_of_the_evaluation():
    assert window_bounds(40, 16) == [(0, 16), (16, 32), (32, 40)]
    assert window_bounds(39, 16) == [(0, 16), (16, 39)]  # a tail of 7 < 8 joins
    assert window_bounds(10, 0) == [(0, 10)]
    with pytest.raises(ValueError, match="size"):
        window_bounds(10, -1)


@pytest.fixture(scope="module")
def data_dir(videos, tmp_path_factory) -> Path:
    """Queries: the stack (a copy of R1 next to other footage) and a plain video; references: R1 and R2 plain."""
    root = tmp_path_factory.mktemp("data")
    (root / "query").mkdir()
    (root / "query" / "Q1.mp4").write_bytes(videos["stack"].read_bytes())
    (root / "query" / "Q2.mp4").write_bytes(videos["plain"].read_bytes())
    _write(root / "reference" / "R1.mp4", _clip("R100000"))
    _write(root / "reference" / "R2.mp4", _clip("R100001"))
    (root / "query_subset.csv").write_text("video_id\nQ1\nQ2\n")
    (root / "query_metadata.csv").write_text("video_id,duration_sec\nQ1,6.0\nQ2,6.0\n")
    (root / "reference_metadata.csv").write_text("video_id,duration_sec\nR1,6.0\nR2,6.0\n")
    return root


def _layout_record(work: Path, video_id: str) -> dict | None:
    with np.load(work / "videos" / f"{video_id}.npz", allow_pickle=False) as data:
        return json.loads(str(data["layout_json"])) if "layout_json" in data.files else None


def test_the_flag_on_queries_and_references_records_each_decision(data_dir, tmp_path, capsys):
    args = ["--data-dir", str(data_dir), "--no-progress", "--device", "cpu", "--references", "--no-score-norm"]
    assert main([*args, "--output-dir", str(tmp_path / "on"), "--layout-views"]) == 0
    console = capsys.readouterr().out
    assert main([*args, "--output-dir", str(tmp_path / "off")]) == 0
    durations = {"Q1": 6.0, "Q2": 6.0}
    validate_descriptor_file(tmp_path / "on" / "subset_query_descriptors.npz", durations)
    work = tmp_path / "on" / ".vcd-work"
    assert _layout_record(work / "query", "Q1")["kind"] == "grid" and _layout_record(work / "query", "Q2")["kind"] == "plain"
    assert {_layout_record(work / "reference", r)["kind"] for r in ("R1", "R2")} == {"plain"}  # references are analysed too
    assert _layout_record(tmp_path / "off" / ".vcd-work" / "query", "Q1") is None
    assert "layout" in json.loads((work / "query" / "run.json").read_text())
    assert "[query] layout views: grid 1, plain 1" in console
    on, off = ({v.video_id: v for v in load_descriptors(tmp_path / d / "subset_query_descriptors.npz")} for d in ("on", "off"))
    assert on["Q2"].features.tobytes() == off["Q2"].features.tobytes()  # the plain query is unchanged
    assert len(on["Q1"]) <= 6
    # the stacked copy of R1 now has a descriptor closer to R1 than any whole-frame descriptor had
    refs = {v.video_id: v for v in load_descriptors(tmp_path / "on" / "reference_descriptors.npz")}
    best_on = float((on["Q1"].features @ refs["R1"].features.T).max())
    best_off = float((off["Q1"].features @ refs["R1"].features.T).max())
    assert best_on > best_off + 0.05, (best_on, best_off)


def test_challenge_mode_keeps_the_decisions_off_the_console(data_dir, tmp_path, capfd):
    assert main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--device", "cpu", "--challenge", "--layout-views"]) == 0
    console = capfd.readouterr()
    text = console.out + console.err
    assert "layout" not in text and "grid" not in text and "Q1" not in text
    assert _layout_record(tmp_path / ".vcd-work" / "query", "Q1")["kind"] == "grid"


def test_the_gpu_path_refuses_the_flag(data_dir, tmp_path, capsys):
    message = "--layout-views runs on the CPU path only (NVDEC has no layout capture yet); use --device cpu"
    with pytest.raises(ValueError, match=re.escape(message)):
        ExtractorConfig(device="gpu", layout_views=True).resolve("gpu")
    with pytest.raises(ValueError, match=re.escape(message)):
        build_extractor(ExtractorConfig(device="gpu", layout_views=True))  # refused before any GPU probe
    assert main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o"), "--device", "gpu", "--layout-views", "--no-progress"]) == 2
    assert message in (tmp_path / "o" / "vcd-runtime.log").read_text()
    assert main(["extract", "--videos", str(data_dir / "query"), "--out", str(tmp_path / "store"), "--device", "gpu",
                 "--layout-views", "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_the_extract_command_records_the_decisions(data_dir, tmp_path):
    store = tmp_path / "store"
    assert main(["extract", "--videos", str(data_dir / "query"), "--out", str(store), "--role", "reference", "--device", "cpu",
                 "--layout-views", "--no-progress", "--merge", str(tmp_path / "refs.npz")]) == 0
    assert _layout_record(store, "Q1")["kind"] == "grid" and _layout_record(store, "Q2")["kind"] == "plain"
    assert "layout" in json.loads((store / "run.json").read_text())["extractor"]
