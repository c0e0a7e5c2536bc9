"""Layout analysis (cpp/layout.cpp via runtime.preprocess.layout) on generated layouts of real footage.

The layouts are made with the dataset's own edit functions (``benchmarks.edits``: hstack, vstack,
picture_in_picture, pad, rotate90) and plain numpy composition (2x2 and 3x1 grids), then squashed to
the video size as the dataset builder does; the expected rectangles are computed from the edit
parameters, independently of the analysis. Plain footage with strong straight edges (skimage's brick
wall, text page and camera man, a synthetic horizon, a still text slide) must not be split.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.edits import EDIT_REGISTRY, EditContext, resize_frame
from runtime._native import vcd_core
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.layout_budget import select_by_view
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.layout import (
    LayoutSettings,
    View,
    analyze_video_layout,
    crop_rgb_views,
    decide_views,
    luma_of_rgb,
)

DEMO = Path(__file__).resolve().parents[1] / "runtime" / "demo_data" / "reference"
W, H = 640, 360
TOL = 3  # pixels


@functools.cache
def _clip(name: str, count: int = 12, fps: float = 2.0) -> tuple[np.ndarray, ...]:
    """``count`` RGB frames of a demo reference at ``fps`` (real footage)."""
    out = []
    with av.open(str(DEMO / f"{name}.mp4")) as container:
        stream = container.streams.video[0]
        next_time = 0.0
        for frame in container.decode(stream):
            if float(frame.pts * stream.time_base) + 1e-6 >= next_time:
                out.append(frame.to_ndarray(format="rgb24"))
                next_time += 1.0 / fps
            if len(out) == count:
                break
    return tuple(out)


def _edit(edit: str, params: dict, copy: str = "R100000", other: str = "R100003", size: tuple[int, int] = (W, H)) -> np.ndarray:
    frames = []
    for k, (a, b) in enumerate(zip(_clip(copy), _clip(other))):
        frames.append(resize_frame(EDIT_REGISTRY[edit].apply(a, params, EditContext(k, 0, b)), *size))
    return luma_of_rgb(np.stack(frames))


def _near(actual, expected, tol=TOL) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def _layout(luma: np.ndarray):
    return vcd_core.analyze_layout(np.ascontiguousarray(luma))


# --- stacks, grids, windows, borders ------------------------------------------------------------


@pytest.mark.parametrize("other_width, other_first", [(0.5, True), (0.7, False), (1.0, True)])
def test_hstack_is_split_at_the_seam(other_width: float, other_first: bool) -> None:
    layout = _layout(_edit("hstack", {"other_width": other_width, "other_first": other_first}))
    other = other_width / (1 + other_width)
    seam = W * (other if other_first else 1 - other)
    assert (layout.grid_rows, layout.grid_cols) == (1, 2)
    assert abs(layout.column_seams[0] - seam) <= TOL
    assert not layout.has_border
    decision = analyze_video_layout(_edit("hstack", {"other_width": other_width, "other_first": other_first}))
    assert decision.kind == "grid" and [v.kind for v in decision.views] == ["whole", "cell", "cell"]
    assert _near(decision.views[1].rect, (0, 0, seam, H)) and _near(decision.views[2].rect, (seam, 0, W, H))


@pytest.mark.parametrize("other_height, other_first", [(0.5, False), (0.8, True)])
def test_vstack_is_split_at_the_seam(other_height: float, other_first: bool) -> None:
    layout = _layout(_edit("vstack", {"other_height": other_height, "other_first": other_first}))
    other = other_height / (1 + other_height)
    seam = H * (other if other_first else 1 - other)
    assert (layout.grid_rows, layout.grid_cols) == (2, 1)
    assert abs(layout.row_seams[0] - seam) <= TOL


def _grid(names: list[str], rows: int, cols: int) -> np.ndarray:
    clips = [_clip(n) for n in names]
    frames = []
    for k in range(len(clips[0])):
        tiles = [resize_frame(clips[i][(k + 3 * i) % len(clips[i])], W // cols, H // rows) for i in range(rows * cols)]
        frames.append(np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0))
    return luma_of_rgb(np.stack(frames))


def test_2x2_grid_has_four_cells() -> None:
    layout = _layout(_grid(["R100000", "R100003", "R100001", "R100002"], 2, 2))
    assert (layout.grid_rows, layout.grid_cols) == (2, 2)
    assert _near(layout.column_seams, [W // 2]) and _near(layout.row_seams, [H // 2])
    cells = sorted(c.as_tuple() for c in layout.cells)
    expected = sorted((x, y, x + W // 2, y + H // 2) for x in (0, W // 2) for y in (0, H // 2))
    assert len(cells) == 4 and all(_near(c, e) for c, e in zip(cells, expected))


def test_3x1_grid_has_three_cells() -> None:
    layout = _layout(_grid(["R100000", "R100003", "R100001"], 1, 3))
    assert (layout.grid_rows, layout.grid_cols) == (1, 3)
    assert _near(layout.column_seams, [W // 3, 2 * (W // 3)])


@pytest.mark.parametrize("size, x, y", [(0.6, 0.3, 0.7), (0.45, 0.0, 0.5), (0.75, 0.9, 0.1)])
def test_picture_in_picture_window(size: float, x: float, y: float) -> None:
    layout = _layout(_edit("picture_in_picture", {"mode": "copy_inset", "size": size, "x": x, "y": y}))
    iw, ih = int(W * size), int(H * size)
    x0, y0 = int(x * (W - iw)), int(y * (H - ih))
    assert layout.has_window and layout.grid_cols == layout.grid_rows == 1
    assert _near(layout.window.as_tuple(), (x0, y0, x0 + iw, y0 + ih)), layout.window


@pytest.mark.parametrize("half_noisy", [False, True])
def test_a_static_box_overlay_is_not_a_window(half_noisy: bool) -> None:
    # A filled box (the dataset's shape_overlay) has persistent straight edges over moving footage;
    # its inside never changes. With noise over the other half of the frames the mean change
    # inside is high, so the rule must look at most frame pairs (the median), not the mean.
    params = {"shapes": [{"kind": "box", "x": 0.3, "y": 0.55, "r": 0.18, "color": [200, 40, 40]}]}
    luma = _edit("shape_overlay", params).copy()
    if half_noisy:
        plain = luma_of_rgb(np.stack([resize_frame(f, W, H) for f in _clip("R100003")]))
        noise = np.random.default_rng(0).normal(0, 20, size=plain.shape)
        luma[: len(luma) // 3] = np.clip(plain[: len(luma) // 3] + noise[: len(luma) // 3], 0, 255).astype(np.uint8)
    layout = _layout(luma)
    assert not layout.has_window, layout.window
    assert len(layout.cells) == 0


@pytest.mark.parametrize("block", [6, pytest.param(10, marks=pytest.mark.xfail(
    strict=True, reason="known: a mostly static pixelised clip keeps some lattice lines persistent on one side only "
    "and the analysis gives a window (mini-VSC Q200159 of seed 0 too); the decision drops it by its shape "
    "(test_pixelised_footage_gets_no_view); see benchmarks/RESULTS.md, issue 18")), 14])
def test_pixelised_footage_is_not_split(block: int) -> None:
    # Block edges of a pixelised picture lie on a fixed lattice in every frame: many equally
    # persistent lines, none standing out from its neighbours.
    layout = _layout(_edit("pixelize", {"block": block}))
    assert len(layout.cells) == 0 and not layout.has_window, (layout.column_seams, layout.row_seams, layout.window)


@pytest.mark.parametrize("block", [6, 10, 14])
def test_pixelised_footage_gets_no_view(block: int) -> None:
    # Where a lattice line does give a window (block 10 above), its shape is not the frame's: a
    # picture-in-picture copy is scaled, so the decision drops it (LayoutSettings.max_window_shape_change).
    assert decide_views(_layout(_edit("pixelize", {"block": block}))).is_plain


@pytest.mark.parametrize("size, x, y", [(0.6, 0.3, 0.7), (0.5, 0.6, 0.3), (0.75, 0.9, 0.1)])
def test_a_picture_in_picture_window_keeps_its_view(size: float, x: float, y: float) -> None:
    decision = decide_views(_layout(_edit("picture_in_picture", {"mode": "copy_inset", "size": size, "x": x, "y": y})))
    iw, ih = int(W * size), int(H * size)
    x0, y0 = int(x * (W - iw)), int(y * (H - ih))
    assert decision.kind == "window" and [v.kind for v in decision.views] == ["whole", "window"]
    assert _near(decision.views[1].rect, (x0, y0, x0 + iw, y0 + ih)), decision.views


class _FakeLayout:
    """A ``vcd_core.VideoLayout`` with one window and nothing else (for the decision rules alone)."""

    def __init__(self, window: tuple[int, int, int, int]) -> None:
        rect = type("Rect", (), {"as_tuple": lambda _, r=window: r})
        whole = type("Rect", (), {"as_tuple": lambda _: (0, 0, W, H)})
        self.frame_width, self.frame_height, self.content, self.window = W, H, whole(), rect()
        self.has_border, self.border_confidence, self.grid_confidence, self.cells = False, 0.0, 0.0, []
        self.grid_rows = self.grid_cols = 1
        self.has_window, self.window_confidence, self.rotated, self.rotated_confidence = True, 0.9, False, 0.0
        self.usable_frames, self.activity = 12, 10.0


@pytest.mark.parametrize("width, height, kept", [(384, 216, True), (320, 200, True), (310, 216, True), (128, 128, False),
                                                 (240, 80, False), (160, 216, False)])
def test_a_window_must_keep_the_frames_shape(width: int, height: int, kept: bool) -> None:
    # W x H is 16:9; 1.25 either way of it is 1.42..2.22 (width / height)
    decision = decide_views(_FakeLayout((40, 40, 40 + width, 40 + height)))
    assert (decision.kind == "window") == kept, decision
    with pytest.raises(ValueError, match="max_window_shape_change"):
        LayoutSettings(max_window_shape_change=0.9)


def test_a_pixelised_copy_inside_a_window_is_still_found() -> None:
    frames = []
    for k, (a, b) in enumerate(zip(_clip("R100000"), _clip("R100003"))):
        inset = EDIT_REGISTRY["pixelize"].apply(a, {"block": 10}, EditContext(k, 0, b))
        frames.append(resize_frame(EDIT_REGISTRY["picture_in_picture"].apply(
            inset, {"mode": "copy_inset", "size": 0.55, "x": 0.2, "y": 0.4}, EditContext(k, 0, b)), W, H))
    layout = _layout(luma_of_rgb(np.stack(frames)))
    iw, ih = int(W * 0.55), int(H * 0.55)
    x0, y0 = int(0.2 * (W - iw)), int(0.4 * (H - ih))
    assert layout.has_window and _near(layout.window.as_tuple(), (x0, y0, x0 + iw, y0 + ih)), layout.window


@pytest.mark.parametrize("params", [
    {"top": 0.2, "bottom": 0.2, "left": 0.0, "right": 0.0, "color": [0, 0, 0]},
    {"top": 0.0, "bottom": 0.0, "left": 0.3, "right": 0.3, "color": [200, 30, 90]},
    {"top": 0.1, "bottom": 0.1, "left": 0.0, "right": 0.0, "color": [255, 255, 255]},
])
def test_pad_borders_are_cropped(params: dict) -> None:
    layout = _layout(_edit("pad", params))
    top, left = params["top"] * H, params["left"] * W
    scale_y, scale_x = H / (H + 2 * top), W / (W + 2 * left)
    expected = (left * scale_x, top * scale_y, W - left * scale_x, H - top * scale_y)
    assert layout.has_border and layout.border_confidence >= 0.6
    assert _near(layout.content.as_tuple(), expected, 2), layout.content
    assert layout.grid_cols == layout.grid_rows == 1 and not layout.rotated


@pytest.mark.parametrize("axis", ["top", "left"])
def test_noisy_padding_bars_are_cropped_not_split(axis: str) -> None:
    # Noise over the whole padded frame (the dataset's pad then noise) defeats the uniform-border
    # test, and the bar edges come out as seams: the outer cells are bars (< 25 % of the frame), so
    # the decision is a crop to the picture, not a grid of bar cells.
    share = 0.2
    params = {"top": 0.0, "bottom": 0.0, "left": 0.0, "right": 0.0, "color": [0, 0, 0], **({"top": share, "bottom": share} if axis == "top" else {"left": share, "right": share})}
    luma = _edit("pad", params).astype(np.float64)
    luma = np.clip(luma + np.random.default_rng(1).normal(0, 20, size=luma.shape), 0, 255).astype(np.uint8)
    decision = analyze_video_layout(luma)
    assert decision.kind in ("border", "plain") and len(decision.views) == 1, decision
    if decision.kind == "border":  # the crop, when made, is the picture
        x0, y0, x1, y1 = decision.views[0].rect
        bar = share / (1 + 2 * share)
        expected = (0, bar * H, W, (1 - bar) * H) if axis == "top" else (bar * W, 0, (1 - bar) * W, H)
        assert _near((x0, y0, x1, y1), expected, 4), decision.views[0].rect


def test_a_stacked_picture_is_not_taken_for_a_bar() -> None:
    decision = analyze_video_layout(_edit("hstack", {"other_width": 0.5, "other_first": True}))
    assert decision.kind == "grid" and len(decision.views) == 3, decision


def pillarboxed_turned_clip(name: str = "R100000") -> list[np.ndarray]:
    """rot90 of the landscape copy, shrunk to the frame height and pillarboxed into the landscape frame."""
    width = round(H * H / W)
    frames = []
    for frame in _clip(name):
        turned = resize_frame(np.ascontiguousarray(np.rot90(frame)), width, H)
        canvas = np.zeros((H, W, 3), np.uint8)
        canvas[:, (W - width) // 2:(W - width) // 2 + width] = turned
        frames.append(canvas)
    return frames


def test_rotation_with_padding_is_recognised() -> None:
    width = round(H * H / W)
    luma = luma_of_rgb(np.stack(pillarboxed_turned_clip()))
    content = ((W - width) // 2, 0, (W - width) // 2 + width, H)
    # by default the shape is only recorded: the orientation probe decides turns (runtime/pipeline/turned_views.py)
    decision = analyze_video_layout(luma)
    assert decision.kind == "border" and decision.confidences["rotated"] > 0 and len(decision.views) == 1
    assert _near(decision.views[0].rect, content)
    decision = analyze_video_layout(luma, LayoutSettings(turned_views=True))
    assert decision.kind == "turned"
    assert _near(decision.views[0].rect, content)
    assert [v.quarter_turns for v in decision.views] == [0, 1, 3]


def test_hstack_survives_h264_compression(tmp_path: Path) -> None:
    luma = _edit("hstack", {"other_width": 0.6, "other_first": False})
    path = tmp_path / "stack.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "40"}
        for plane in luma:
            rgb = np.repeat(plane[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
    layout = _layout(decoded)
    assert layout.grid_cols == 2 and abs(layout.column_seams[0] - W / 1.6) <= TOL


# --- plain videos are not split -------------------------------------------------------------------


def _pan(image: np.ndarray, count: int = 12, step: int = 9) -> np.ndarray:
    """A camera pan over a still picture: frames of H x W moving right by ``step`` pixels."""
    grey = image if image.ndim == 2 else luma_of_rgb(image)
    scale = max(H / grey.shape[0], (W + step * count) / grey.shape[1])
    big = resize_frame(np.repeat(grey[:, :, None], 3, axis=2), int(grey.shape[1] * scale) + 1, int(grey.shape[0] * scale) + 1)[:, :, 0]
    return np.stack([big[:H, k * step:k * step + W] for k in range(count)])


def _skimage(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return getattr(data, name)()


@pytest.mark.parametrize("name", ["brick", "text", "camera", "coffee", "astronaut"])
def test_panned_pictures_with_straight_edges_are_not_split(name: str) -> None:
    layout = _layout(_pan(_skimage(name)))
    assert layout.grid_rows == layout.grid_cols == 1 and not layout.has_window, (layout.column_seams, layout.row_seams, layout.window)


def test_synthetic_horizon_is_not_split() -> None:
    rng = np.random.default_rng(0)
    sea = luma_of_rgb(np.stack(_clip("R100003")))[:, : H // 2]
    frames = []
    for k, water in enumerate(sea):
        sky = np.linspace(200, 150, H // 2)[:, None] + rng.normal(0, 1.0, (H // 2, W)) + k  # a smooth sky, brightening
        frames.append(np.concatenate([np.clip(sky, 0, 255).astype(np.uint8), water], axis=0))
    layout = _layout(np.stack(frames))
    assert layout.grid_rows == layout.grid_cols == 1 and not layout.has_window


def test_still_text_slide_is_not_split() -> None:
    slide = np.full((H, W), 240, np.uint8)
    slide[40:44, 30:610] = 20  # a title rule
    slide[:, 318:322] = 20  # a column rule
    text = resize_frame(np.repeat(_skimage("text")[:, :, None], 3, axis=2), 280, 240)[:, :, 0]
    slide[80:320, 20:300] = text
    slide[80:320, 340:620] = text
    layout = _layout(np.stack([slide] * 10))
    assert layout.grid_rows == layout.grid_cols == 1 and not layout.has_window


@pytest.mark.parametrize("name", ["R100000", "R100001", "R100002", "R100003"])
def test_demo_references_are_plain(name: str) -> None:
    decision = analyze_video_layout(luma_of_rgb(np.stack(_clip(name))))
    assert decision.kind in ("plain", "border") and len(decision.views) == 1


def test_blank_frames_are_ignored() -> None:
    luma = _edit("hstack", {"other_width": 0.8, "other_first": True})
    with_black = np.concatenate([np.zeros((3, H, W), np.uint8), luma])
    layout = _layout(with_black)
    assert [f.blank for f in layout.frames[:4]] == [True, True, True, False]
    assert layout.usable_frames == len(luma) and layout.grid_cols == 2


# --- property tests over random geometry ----------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["hstack", "vstack", "pad_v", "pad_h", "pip"]), a=st.floats(0.1, 1.0), b=st.floats(0.0, 1.0),
       c=st.floats(0.0, 1.0))
def test_random_geometry(kind: str, a: float, b: float, c: float) -> None:
    size = (320, 180)
    w, h = size
    if kind == "hstack":
        ratio = 0.5 + 0.5 * a
        layout = _layout(_edit("hstack", {"other_width": ratio, "other_first": b < 0.5}, size=size))
        seam = w * (ratio / (1 + ratio) if b < 0.5 else 1 / (1 + ratio))
        assert layout.grid_cols == 2 and abs(layout.column_seams[0] - seam) <= TOL
    elif kind == "vstack":
        ratio = 0.5 + 0.5 * a
        layout = _layout(_edit("vstack", {"other_height": ratio, "other_first": b < 0.5}, size=size))
        seam = h * (ratio / (1 + ratio) if b < 0.5 else 1 / (1 + ratio))
        assert layout.grid_rows == 2 and abs(layout.row_seams[0] - seam) <= TOL
    elif kind.startswith("pad"):
        amount = 0.1 + 0.25 * a
        colour = [0, 0, 0] if c < 0.5 else [int(255 * b), 128, int(255 * c)]
        vertical = kind == "pad_v"
        params = {"top": amount if vertical else 0, "bottom": amount if vertical else 0,
                  "left": 0 if vertical else amount, "right": 0 if vertical else amount, "color": colour}
        layout = _layout(_edit("pad", params, size=size))
        if vertical:
            t = amount * H * h / (H + 2 * amount * H)
            expected = (0, t, w, h - t)
        else:
            t = amount * W * w / (W + 2 * amount * W)
            expected = (t, 0, w - t, h)
        assert layout.has_border and _near(layout.content.as_tuple(), expected, 2)
    else:
        scale = 0.45 + 0.3 * a
        layout = _layout(_edit("picture_in_picture", {"mode": "copy_inset", "size": scale, "x": b, "y": c}))
        iw, ih = int(W * scale), int(H * scale)
        x0, y0 = int(b * (W - iw)), int(c * (H - ih))
        assert layout.has_window and _near(layout.window.as_tuple(), (x0, y0, x0 + iw, y0 + ih))


# --- errors, crops and the budget ---------------------------------------------------------------


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=re.escape("must have dtype uint8, got float32")):
        vcd_core.analyze_layout(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ValueError, match=re.escape("got (2, 4, 32, 32)")):
        vcd_core.analyze_layout(np.zeros((2, 4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=re.escape("seam_coverage must be in (0, 1], got 1.5")):
        vcd_core.analyze_layout(np.zeros((2, 32, 32), np.uint8), seam_coverage=1.5)


def test_planar_rgb_matches_luma() -> None:
    rgb = np.stack(_clip("R100000")[:4])
    a = _layout(luma_of_rgb(rgb))
    b = _layout(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
    assert [f.vertical_seam for f in a.frames] == [f.vertical_seam for f in b.frames]


def test_crops_come_from_the_native_frame() -> None:
    frame = np.zeros((1, H, W, 3), np.uint8)
    frame[0, :, W // 2:] = 255  # the right half white
    config = PreprocessConfig(height=8, width=8)
    left, right, turned = crop_rgb_views(frame, (View("cell", (0, 0, W // 2, H)), View("cell", (W // 2, 0, W, H)),
                                                 View("turned", (W // 4, 0, 3 * W // 4, H), 1)), config)
    assert left.max() == 0 and right.min() == 255
    # turned counter-clockwise: the white right half of the crop is now at the top
    assert turned[0, 0, :4].min() == 255 and turned[0, 0, 4:].max() == 0


def test_budget_is_shared_among_views_and_never_exceeded() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3 * 20, 16)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    views = np.tile(np.arange(3), 20)
    keep = select_by_view(features, views, 10.0, BudgetConfig(duplicate_similarity=0.9))
    assert len(keep) == 10 and sorted(np.bincount(views[keep]).tolist()) == [3, 3, 4]
    # a view with only near-duplicates gives its slots to the others
    features[views == 2] = features[2]
    keep = select_by_view(features, views, 10.0, BudgetConfig(duplicate_similarity=0.9))
    assert len(keep) == 10 and np.bincount(views[keep], minlength=3)[2] == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_grid_confidence must be in"):
        LayoutSettings(min_grid_confidence=2.0)


# --- the host decode session: decode -> analysis -> native-resolution crops -> rows per view ----------


class _ListSink:
    def __init__(self) -> None:
        self.plan = None
        self.rows: dict[int, np.ndarray] = {}

    def start(self, plan) -> None:
        self.plan = plan
        self.rows = {}

    def write(self, sample: int, writer) -> None:
        buffer = np.zeros((1, 3, 224, 224), np.uint8)
        writer(buffer, 0, None)
        self.rows[sample] = buffer[0]


def _write_video(path: Path, frames: np.ndarray, fps: int = 2) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("capture_bytes", [256 << 20, 0])  # planes kept, or a second decode pass
def test_layout_session_embeds_cells_of_a_stack(tmp_path: Path, capture_bytes: int) -> None:
    from runtime.decode.pyav import PyAVDecoder
    from runtime.device.host import HostOps
    from runtime.pipeline.host import HostDecodeSession
    from runtime.sampling import SamplingPolicy

    frames = []
    for k, (a, b) in enumerate(zip(_clip("R100000"), _clip("R100003"))):
        frames.append(resize_frame(EDIT_REGISTRY["hstack"].apply(a, {"other_width": 1.0, "other_first": True}, EditContext(k, 0, b)), W, H))
    path = tmp_path / "stack.mp4"
    _write_video(path, np.stack(frames))
    session = HostDecodeSession(PyAVDecoder(layout_capture_bytes=capture_bytes), SamplingPolicy(fps=2.0), PreprocessConfig(), HostOps(),
                                layout=LayoutSettings())
    sink = _ListSink()
    session.decode_into(str(path), sink)
    views, record = sink.plan.views, sink.plan.layout
    assert record["kind"] == "grid" and record["second_pass"] == (capture_bytes == 0)
    samples = len(sink.plan.intervals) // 3
    assert samples >= 5 and views.tolist() == [0, 1, 2] * samples and len(sink.rows) == 3 * samples
    # the right cell is the copy: its model input equals the copy's frame squashed to 224 x 224
    copy_cell = sink.rows[3 * 2 + 2].astype(np.float32)
    left_cell = sink.rows[3 * 2 + 1].astype(np.float32)
    expected = resize_frame(_clip("R100000")[2], 224, 224).transpose(2, 0, 1).astype(np.float32)
    assert np.abs(copy_cell - expected).mean() < 12 < np.abs(left_cell - expected).mean()
