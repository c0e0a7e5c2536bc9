"""Edit handling by layout: find the copied picture inside the frame and make model inputs of its parts.

A copy that fills only part of the frame (stacks, grids, picture-in-picture, bars) or is turned
by 90 degrees with padding is described badly by a whole-frame embedding. ``analyze_video_layout``
runs the C++ analysis (``vcd_core.analyze_layout``, Note [Layout evidence] in ``cpp/layout.h``) on
one video's sampled frames and turns it into a ``LayoutDecision``: the *views* to embed for every
sampled frame, in frame coordinates. View 0 is always the whole picture (the frame, or its content
with uniform borders cropped: a reference with black bars gets them cropped, on both sides of the
search alike); further views are grid cells, a picture-in-picture window or the content turned by
+-90 degrees. ``crop_yuv420p_views`` / ``crop_rgb_views`` make the model inputs of the views from the
decoded frame at its native resolution (never from the 224 x 224 model input). Turns are decided
after inference by default, by the orientation probe on the model's embeddings
(``runtime/pipeline/turned_views.py``); the shape-based turned views here are an option
(``LayoutSettings.turned_views``).

Note [Layout views are per video]: the decision depends on the video's own frames only, and the
same views are cut from every sampled frame it covers (a stack's seam does not move), so the
per-video budget (``runtime.postprocess.layout_budget``) can spend the video's Σ ceil(duration)
slots among the views.

Note [Layout windows]: a copy is often a segment of a query (plain footage, then a stack, then
plain again), so the decision is made per time window of ``LayoutSettings.window_samples``
consecutive samples (``window_bounds``; 0 = one window for the whole video), each from the luma
of its own samples only (at most ``max_analysis_frames`` of them, evenly spread). A window
without a layout keeps its plain whole-frame rows; ``select_by_window`` shares the budget among
the windows by their picture-seconds, and ``LayoutPostprocessor`` lets the parts of a split window
replace its whole frame. The window length (12 samples, 6 s at 2 samples/s) was chosen on the
mini-VSC dev build; one decision per video gains almost nothing there, as copies are segments
(``benchmarks/layout_eval.py``, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from runtime._native import vcd_core
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.cpu import preprocess_rgb, preprocess_yuv420p

Rect = tuple[int, int, int, int]
"""(x0, y0, x1, y1), half-open, in coded-frame pixels."""

VIEW_KINDS = ("whole", "cell", "window", "turned", "flipped")  # flipped: upside-down windows (runtime/pipeline/turned_views.py)


@dataclass(frozen=True)
class LayoutSettings:
    """When the analysis' findings become extra views.

    Attributes:
        window_samples: consecutive samples decided together (Note [Layout windows]; 0 = the whole
            video is one window); a window of fewer than 3 decoded samples stays plain.
        max_analysis_frames: frames of a window the analysis looks at (spread evenly over its samples).
        min_border_confidence: crop uniform borders at or above this confidence.
        min_grid_confidence: split into cells at or above this seam coverage.
        min_window_confidence: add the picture-in-picture window at or above this confidence.
        max_window_shape_change: a picture-in-picture window is a scaled copy, so it keeps the content's
            shape: its width / height ratio must be within this factor of the content's (a square
            shape overlay or a thin band of a pixelised picture is not a window).
        turned_views: add the content turned by +-90 degrees when its shape says it was rotated (off: the
            orientation probe after inference decides turns, ``runtime/pipeline/turned_views.py``; the
            shape alone tied with it on the mini-VSC dev build and gave turned views to flat footage).
        min_view_side: views narrower or lower than this many pixels are not embedded.
        max_bar_share: outer cells of a one-axis split thinner than this share of the content are
            padding bars, not pictures: they are cropped (a single remaining cell becomes the content).
        analysis: keyword options of ``vcd_core.analyze_layout`` (None = its defaults).
    """

    window_samples: int = 12  # chosen on the mini-VSC dev build (seed 1) among 8, 12, 16: benchmarks/RESULTS.md, issue 18
    max_analysis_frames: int = 48
    min_border_confidence: float = 0.6
    min_grid_confidence: float = 0.5
    min_window_confidence: float = 0.75
    max_window_shape_change: float = 1.25  # windows of mini-VSC's picture-in-picture copies: 1.00-1.19; false ones 0.75, 2.2
    turned_views: bool = False  # chosen on the mini-VSC dev build (seed 1): benchmarks/RESULTS.md, issue 18
    min_view_side: int = 32
    max_bar_share: float = 0.25
    analysis: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.window_samples, int) or self.window_samples < 0:
            raise ValueError(f"window_samples must be an integer >= 0 (0 = the whole video), got {self.window_samples!r}")
        if self.max_analysis_frames < 3:
            raise ValueError(f"max_analysis_frames must be >= 3, got {self.max_analysis_frames}")
        for name in ("min_border_confidence", "min_grid_confidence", "min_window_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.max_bar_share < 0.5:
            raise ValueError(f"max_bar_share must be in [0, 0.5), got {self.max_bar_share}")
        if not self.max_window_shape_change >= 1.0:
            raise ValueError(f"max_window_shape_change must be >= 1, got {self.max_window_shape_change}")
        if self.min_view_side < 1:
            raise ValueError(f"min_view_side must be >= 1, got {self.min_view_side}")


@dataclass(frozen=True)
class View:
    """One part of every sampled frame to embed.

    Attributes:
        kind: one of ``VIEW_KINDS``.
        rect: the crop, (x0, y0, x1, y1) in coded-frame pixels.
        quarter_turns: counter-clockwise quarter turns applied after the crop (``turned`` views).
    """

    kind: str
    rect: Rect
    quarter_turns: int = 0


@dataclass(frozen=True)
class LayoutDecision:
    """The decision for one window of a video (Note [Layout views are per video], Note [Layout windows]).

    Attributes:
        kind: ``plain``, ``border``, ``grid``, ``window`` or ``turned`` (the strongest finding used).
        frame_size: (width, height) of the analysed frames.
        views: the views to embed; views[0] is the whole picture.
        confidences: ``border``, ``grid``, ``window``, ``rotated`` (0 when not found).
        grid: (rows, cols) of the split (1, 1 when not split).
        frames_analysed: usable frames the analysis saw.
        activity: mean |frame difference| inside the content (gray levels).
    """

    kind: str
    frame_size: tuple[int, int]
    views: tuple[View, ...]
    confidences: dict[str, float] = field(default_factory=dict)
    grid: tuple[int, int] = (1, 1)
    frames_analysed: int = 0
    activity: float = 0.0

    @property
    def is_plain(self) -> bool:
        """Only the uncropped whole frame is embedded."""
        width, height = self.frame_size
        return len(self.views) == 1 and self.views[0].rect == (0, 0, width, height)

    def to_record(self) -> dict[str, Any]:
        """JSON-able form for the per-video results."""
        record = asdict(self)
        record["views"] = [{"kind": v.kind, "rect": list(v.rect), "quarter_turns": v.quarter_turns} for v in self.views]
        record["frame_size"] = list(self.frame_size)
        record["grid"] = list(self.grid)
        return record


def plain_decision(width: int, height: int) -> LayoutDecision:
    """The decision for a video that is not analysed: its whole frame only."""
    return LayoutDecision("plain", (width, height), (View("whole", (0, 0, width, height)),))


def window_bounds(count: int, size: int) -> list[tuple[int, int]]:
    """The time windows of ``count`` samples (Note [Layout windows]).

    Args:
        count: samples of the video.
        size: samples per window (0 = one window).

    Returns:
        Consecutive half-open ranges ``(a, b)`` covering ``0..count`` in order: windows of ``size``
        samples, a tail shorter than ``size // 2`` joined to the window before it.
    """
    if count < 0 or size < 0:
        raise ValueError(f"count and size must be >= 0, got count={count}, size={size}")
    if size == 0 or count <= size:
        return [(0, count)]
    bounds = [(s, min(s + size, count)) for s in range(0, count, size)]
    if bounds[-1][1] - bounds[-1][0] < size // 2:
        bounds[-2:] = [(bounds[-2][0], count)]
    return bounds


def analysis_indices(count: int, settings: LayoutSettings) -> np.ndarray:
    """Which of a window's ``count`` samples the analysis looks at: at most ``max_analysis_frames``, evenly spread."""
    if count <= settings.max_analysis_frames:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, settings.max_analysis_frames).round().astype(np.int64))


def analyze_video_layout(frames: np.ndarray, settings: LayoutSettings = LayoutSettings()) -> LayoutDecision:
    """Analyse the sampled frames of one video (or one window of it) and decide which views to embed.

    Args:
        frames: (N, H, W) luma or (N, 3, H, W) planar RGB uint8, time order, one video or window.
        settings: thresholds turning findings into views.

    Returns:
        The decision; ``views[0]`` is the whole picture (borders cropped when found).

    Raises:
        ValueError: frames of the wrong dtype or shape, bad analysis options.
    """
    layout = vcd_core.analyze_layout(np.ascontiguousarray(frames), **(settings.analysis or {}))
    return decide_views(layout, settings)


def decide_views(layout: Any, settings: LayoutSettings = LayoutSettings()) -> LayoutDecision:
    """Turn a ``vcd_core.VideoLayout`` into views (see ``LayoutSettings``)."""
    width, height = int(layout.frame_width), int(layout.frame_height)
    frame = (0, 0, width, height)
    content = layout.content.as_tuple() if layout.has_border and layout.border_confidence >= settings.min_border_confidence else frame
    confidences = {
        "border": float(layout.border_confidence) if layout.has_border else 0.0,
        "grid": float(layout.grid_confidence),
        "window": float(layout.window_confidence) if layout.has_window else 0.0,
        "rotated": float(layout.rotated_confidence) if layout.rotated else 0.0,
    }
    views = [View("whole", content)]
    kind = "border" if content != frame else "plain"
    grid = (1, 1)

    def big_enough(rect: Rect) -> bool:
        return rect[2] - rect[0] >= settings.min_view_side and rect[3] - rect[1] >= settings.min_view_side

    cells = [cell.as_tuple() for cell in layout.cells]
    rows, cols = int(layout.grid_rows), int(layout.grid_cols)
    if len(cells) >= 2 and layout.grid_confidence >= settings.min_grid_confidence and content == layout.content.as_tuple() and min(rows, cols) == 1:
        cells, rows, cols = _without_bars(cells, rows, cols, content, settings.max_bar_share)
        if len(cells) == 1:  # bars the border test missed (noisy or textured padding): a crop
            content = cells[0]
            views = [View("whole", content)]
            kind = "border"
            confidences["border"] = max(confidences["border"], float(layout.grid_confidence))
            cells = []
    if len(cells) >= 2 and layout.grid_confidence >= settings.min_grid_confidence and views[0].rect == layout.content.as_tuple():
        views += [View("cell", cell) for cell in cells if big_enough(cell)]
        kind, grid = "grid", (rows, cols)
    elif (layout.has_window and layout.window_confidence >= settings.min_window_confidence and big_enough(layout.window.as_tuple())
          and _keeps_shape(layout.window.as_tuple(), content, settings.max_window_shape_change)):
        views.append(View("window", layout.window.as_tuple()))
        kind = "window"
    if settings.turned_views and layout.rotated and content != frame:
        views += [View("turned", content, 1), View("turned", content, 3)]
        kind = "turned" if kind in ("plain", "border") else kind
    return LayoutDecision(kind, (width, height), tuple(views), confidences, grid, int(layout.usable_frames), float(layout.activity))


def _without_bars(cells: list[Rect], rows: int, cols: int, content: Rect, max_share: float) -> tuple[list[Rect], int, int]:
    """A one-axis split without its outer cells narrower than ``max_share`` of the content: padding
    bars are 8-21 % of a padded frame, a stacked picture a third or more."""
    axis = 0 if rows == 1 else 1  # 0: side by side (widths), 1: one above the other (heights)
    extent = content[2 + axis] - content[axis]
    kept = list(cells)
    for end in (0, -1):
        if len(kept) >= 2 and (kept[end][2 + axis] - kept[end][axis]) < max_share * extent:
            kept.pop(end)
    return kept, (1 if axis == 0 else len(kept)), (len(kept) if axis == 0 else 1)


def _keeps_shape(rect: Rect, content: Rect, factor: float) -> bool:
    """Whether ``rect``'s width / height ratio is within ``factor`` of ``content``'s."""
    change = ((rect[2] - rect[0]) / (rect[3] - rect[1])) / ((content[2] - content[0]) / (content[3] - content[1]))
    return 1.0 / factor <= change <= factor


def _even_rect(rect: Rect, width: int, height: int) -> Rect:
    """The rect grown to even corners (4:2:0 chroma is shared by 2 x 2 luma pixels), inside the frame."""
    x0, y0, x1, y1 = rect
    return (max(0, x0 - x0 % 2), max(0, y0 - y0 % 2), min(width, x1 + x1 % 2), min(height, y1 + y1 % 2))


def turn_images(batch: np.ndarray, quarter_turns: int) -> np.ndarray:
    """(N, C, H, W) model inputs turned counter-clockwise by ``quarter_turns`` (contiguous; unchanged for whole turns)."""
    if quarter_turns % 4 == 0:
        return batch
    return np.ascontiguousarray(np.rot90(batch, k=quarter_turns, axes=(2, 3)))


def _view_config(config: PreprocessConfig, rotation: int, quarter_turns: int) -> PreprocessConfig:
    # A turn by an odd number of quarters after the resize needs the transposed output size.
    if (rotation // 90 + quarter_turns) % 2 == 1 and config.height != config.width:
        return PreprocessConfig(**{**config.__dict__, "height": config.width, "width": config.height})
    return config


def crop_yuv420p_views(y: np.ndarray, u: np.ndarray, v: np.ndarray, views: tuple[View, ...], config: PreprocessConfig,
                       rotation: int = 0) -> list[np.ndarray]:
    """Model inputs of every view of a batch of yuv420p frames, from their native planes.

    Args:
        y, u, v: (N, H, W) luma and (N, ceil(H/2), ceil(W/2)) chroma planes, uint8.
        views: the video's views (rects in these frames' coordinates).
        config: the model input contract.
        rotation: display rotation of the stream (degrees counter-clockwise), applied after the crop.

    Returns:
        One (N, 3, height, width) array per view, in ``views`` order.
    """
    height, width = y.shape[-2:]
    out = []
    for view in views:
        x0, y0, x1, y1 = _even_rect(view.rect, width, height)
        cfg = _view_config(config, rotation, view.quarter_turns)
        images = preprocess_yuv420p(
            np.ascontiguousarray(y[..., y0:y1, x0:x1]),
            np.ascontiguousarray(u[..., y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2]),
            np.ascontiguousarray(v[..., y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2]),
            cfg,
        )
        out.append(turn_images(images, rotation // 90 + view.quarter_turns))
    return out


def crop_rgb_views(rgb: np.ndarray, views: tuple[View, ...], config: PreprocessConfig, rotation: int = 0) -> list[np.ndarray]:
    """Model inputs of every view of a batch of (N, H, W, 3) RGB frames (see ``crop_yuv420p_views``)."""
    out = []
    for view in views:
        x0, y0, x1, y1 = view.rect
        cfg = _view_config(config, rotation, view.quarter_turns)
        images = preprocess_rgb(np.ascontiguousarray(rgb[..., y0:y1, x0:x1, :]), cfg)
        out.append(turn_images(images, rotation // 90 + view.quarter_turns))
    return out


def luma_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of (..., 3) uint8 RGB (the weights the C++ analysis uses for planar RGB)."""
    weights = np.asarray([77, 150, 29], dtype=np.uint32)
    return ((rgb.astype(np.uint32) @ weights + 128) >> 8).astype(np.uint8)

