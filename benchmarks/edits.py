"""VSC-style edits applied to copied segments: a registry of named, parameterised transformations.

Spatial edits are per-frame functions on ``(H, W, 3)`` uint8 RGB arrays (numpy/Pillow; FFmpeg's drawtext
is not in PyAV's build, so text uses Pillow's default font). Their parameters are drawn once per segment
(``EditType.sample``) so an edit is stable over time, as in VSC. Temporal edits (``speed``,
``frame_rate``) and the encoding edit (``low_bitrate``) have no frame function: the dataset planner turns
them into time mappings and encoder settings (and maps the ground truth accordingly).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Frame = np.ndarray


@dataclass(frozen=True)
class EditContext:
    """What a frame function may need besides the frame.

    Attributes:
        frame_index: index of the frame within the edited segment.
        seed: per-segment seed (noise is drawn from ``seed`` and ``frame_index``, so renders are reproducible).
        other: a frame of unrelated footage at the same time, same size as the frame (for picture-in-picture,
            stacking and blending), or None for edits that do not use one.
    """

    frame_index: int
    seed: int
    other: Frame | None = None


@dataclass(frozen=True)
class AppliedEdit:
    """An edit with the parameters drawn for one segment."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class EditType:
    """A named edit.

    Attributes:
        name: registry key, written to ``edits.csv``.
        kind: ``spatial`` (per-frame function), ``temporal`` (time mapping) or ``encoding`` (encoder setting).
        sample: draws the segment's parameters.
        apply: the per-frame function for spatial edits, None otherwise.
        needs_other: the frame function needs ``EditContext.other``.
    """

    name: str
    kind: str
    sample: Callable[[random.Random], dict[str, Any]]
    apply: Callable[[Frame, dict[str, Any], EditContext], Frame] | None = None
    needs_other: bool = False


def _pil(frame: Frame):
    from PIL import Image

    return Image.fromarray(frame)


def _resize(frame: Frame, width: int, height: int) -> Frame:
    from PIL import Image

    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    return np.asarray(_pil(frame).resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR))


def resize_frame(frame: Frame, width: int, height: int) -> Frame:
    """Bilinear resize of an RGB frame to ``width x height`` (no-op when already that size)."""
    return _resize(frame, width, height)


# --- spatial edits -------------------------------------------------------------------------------------


def _crop(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    h, w = frame.shape[:2]
    x0, y0 = int(p["x0"] * w), int(p["y0"] * h)
    x1, y1 = max(x0 + 2, int(p["x1"] * w)), max(y0 + 2, int(p["y1"] * h))
    return frame[y0:y1, x0:x1]


def _sample_crop(rng: random.Random) -> dict:
    fw, fh = rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)
    x0, y0 = rng.uniform(0, 1 - fw), rng.uniform(0, 1 - fh)
    return {"x0": round(x0, 4), "y0": round(y0, 4), "x1": round(x0 + fw, 4), "y1": round(y0 + fh, 4)}


def _scale(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    h, w = frame.shape[:2]
    return _resize(frame, int(w * p["factor"]), int(h * p["factor"]))


def _rotate90(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    return np.ascontiguousarray(np.rot90(frame, k=p["k"]))


def _rotate(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    from PIL import Image

    return np.asarray(_pil(frame).rotate(p["degrees"], resample=Image.Resampling.BILINEAR, fillcolor=tuple(p["fill"])))


def _blur(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    from PIL import ImageFilter

    return np.asarray(_pil(frame).filter(ImageFilter.GaussianBlur(p["radius"])))


def _pixelize(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    from PIL import Image

    h, w = frame.shape[:2]
    block = p["block"]
    small = _pil(frame).resize((max(1, w // block), max(1, h // block)), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST))


def _grayscale(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    grey = np.asarray(_pil(frame).convert("L"))
    return np.repeat(grey[:, :, None], 3, axis=2)


def _brightness(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    return np.clip(frame.astype(np.int16) + p["delta"], 0, 255).astype(np.uint8)


def _contrast(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    mean = frame.mean()
    return np.clip((frame.astype(np.float32) - mean) * p["factor"] + mean, 0, 255).astype(np.uint8)


def _hue_shift(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    hsv = np.array(_pil(frame).convert("HSV"))
    hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int16) + p["shift"]) % 256
    from PIL import Image

    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def _noise(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    rng = np.random.default_rng([ctx.seed, ctx.frame_index])
    noise = rng.normal(0.0, p["sigma"], size=frame.shape).astype(np.float32)
    return np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)


_WORDS = ("LOL", "wait for it", "omg", "#viral", "follow me", "so cute", "BEST MOMENT", "repost", "2022", "epic", "watch")


def _text_overlay(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    from PIL import ImageDraw, ImageFont

    image = _pil(frame.copy())
    h, w = frame.shape[:2]
    font = ImageFont.load_default(size=max(8, int(p["size"] * h)))
    draw = ImageDraw.Draw(image)
    xy = (int(p["x"] * w), int(p["y"] * h))
    draw.text(xy, p["text"], fill=tuple(p["color"]), font=font, stroke_width=max(1, int(p["size"] * h) // 12), stroke_fill=(0, 0, 0))
    return np.asarray(image)


def _shape_overlay(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    from PIL import ImageDraw

    image = _pil(frame.copy())
    h, w = frame.shape[:2]
    draw = ImageDraw.Draw(image)
    for shape in p["shapes"]:
        cx, cy, r = shape["x"] * w, shape["y"] * h, shape["r"] * min(w, h)
        box = (cx - r, cy - r, cx + r, cy + r)
        colour = tuple(shape["color"])
        if shape["kind"] == "smiley":  # an emoji-like face
            draw.ellipse(box, fill=colour, outline=(0, 0, 0))
            e = r / 4
            draw.ellipse((cx - 2 * e - e / 2, cy - e - e / 2, cx - 2 * e + e / 2, cy - e + e / 2), fill=(0, 0, 0))
            draw.ellipse((cx + 2 * e - e / 2, cy - e - e / 2, cx + 2 * e + e / 2, cy - e + e / 2), fill=(0, 0, 0))
            draw.arc((cx - 2.2 * e, cy - e, cx + 2.2 * e, cy + 2.5 * e), 20, 160, fill=(0, 0, 0), width=max(1, int(e / 2)))
        elif shape["kind"] == "heart":
            draw.polygon([(cx - r, cy - r / 3), (cx, cy + r), (cx + r, cy - r / 3), (cx, cy - r / 3)], fill=colour)
            draw.ellipse((cx - r, cy - r, cx, cy), fill=colour)
            draw.ellipse((cx, cy - r, cx + r, cy), fill=colour)
        elif shape["kind"] == "star":
            points = []
            for i in range(10):
                radius = r if i % 2 == 0 else r * 0.45
                angle = np.pi / 2 + i * np.pi / 5
                points.append((cx + radius * np.cos(angle), cy - radius * np.sin(angle)))
            draw.polygon(points, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    return np.asarray(image)


def _sample_shapes(rng: random.Random) -> dict:
    return {
        "shapes": [
            {
                "kind": rng.choice(["smiley", "heart", "star", "box"]),
                "x": round(rng.uniform(0.1, 0.9), 4),
                "y": round(rng.uniform(0.1, 0.9), 4),
                "r": round(rng.uniform(0.06, 0.18), 4),
                "color": [rng.randrange(256) for _ in range(3)],
            }
            for _ in range(rng.randint(1, 4))
        ]
    }


def _pad(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    h, w = frame.shape[:2]
    top, bottom, left, right = (int(p[k] * h if k in ("top", "bottom") else p[k] * w) for k in ("top", "bottom", "left", "right"))
    out = np.empty((h + top + bottom, w + left + right, 3), np.uint8)
    out[:] = np.asarray(p["color"], np.uint8)
    out[top:top + h, left:left + w] = frame
    return out


def _sample_pad(rng: random.Random) -> dict:
    if rng.random() < 0.5:  # letterbox or pillarbox
        v, hz = rng.uniform(0.1, 0.35), 0.0
    else:
        v, hz = 0.0, rng.uniform(0.1, 0.35)
    colour = [0, 0, 0] if rng.random() < 0.6 else [rng.randrange(256) for _ in range(3)]
    return {"top": round(v, 4), "bottom": round(v, 4), "left": round(hz, 4), "right": round(hz, 4), "color": colour}


def _other(ctx: EditContext) -> Frame:
    if ctx.other is None:
        raise ValueError("this edit needs other footage (EditContext.other), got None")
    return ctx.other


def _picture_in_picture(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    """The copy shrunk into unrelated footage (``copy_inset``), or unrelated footage over the copy."""
    h, w = frame.shape[:2]
    background, inset = (_other(ctx), frame) if p["mode"] == "copy_inset" else (frame, ctx.other)
    out = background.copy()
    iw, ih = max(2, int(w * p["size"])), max(2, int(h * p["size"]))
    x0, y0 = int(p["x"] * (w - iw)), int(p["y"] * (h - ih))
    out[y0:y0 + ih, x0:x0 + iw] = _resize(inset, iw, ih)
    return out


def _sample_pip(rng: random.Random) -> dict:
    mode = "copy_inset" if rng.random() < 0.6 else "other_inset"
    size = rng.uniform(0.45, 0.75) if mode == "copy_inset" else rng.uniform(0.2, 0.4)
    return {"mode": mode, "size": round(size, 4), "x": round(rng.random(), 4), "y": round(rng.random(), 4)}


def _hstack(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    h, w = frame.shape[:2]
    other = _resize(_other(ctx), int(w * p["other_width"]), h)
    return np.concatenate([other, frame] if p["other_first"] else [frame, other], axis=1)


def _vstack(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    h, w = frame.shape[:2]
    other = _resize(_other(ctx), w, int(h * p["other_height"]))
    return np.concatenate([other, frame] if p["other_first"] else [frame, other], axis=0)


def _blend(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    alpha = p["alpha"]
    return (frame.astype(np.float32) * alpha + _other(ctx).astype(np.float32) * (1 - alpha)).round().astype(np.uint8)


def _perspective(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    from PIL import Image

    h, w = frame.shape[:2]
    # Corners of the source quad (relative offsets) mapped onto the full output rectangle.
    d = p["corners"]
    src = [(d[0] * w, d[1] * h), ((1 - d[2]) * w, d[3] * h), ((1 - d[4]) * w, (1 - d[5]) * h), (d[6] * w, (1 - d[7]) * h)]
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    coeffs = _perspective_coeffs(dst, src)
    return np.asarray(_pil(frame).transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR))


def _perspective_coeffs(dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]) -> list[float]:
    """Coefficients for PIL's PERSPECTIVE transform mapping output points ``dst`` to input points ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.asarray(rows, np.float64)
    b = np.asarray([c for point in src for c in point], np.float64)
    return np.linalg.solve(a, b).tolist()


def _negate(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    return 255 - frame


def _hflip(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    return np.ascontiguousarray(frame[:, ::-1])


def _vflip(frame: Frame, p: dict, ctx: EditContext) -> Frame:
    return np.ascontiguousarray(frame[::-1])


def _r(lo: float, hi: float) -> Callable[[random.Random], float]:
    return lambda rng: round(rng.uniform(lo, hi), 4)


EDIT_TYPES: tuple[EditType, ...] = (
    EditType("crop", "spatial", _sample_crop, _crop),
    EditType("scale", "spatial", lambda rng: {"factor": _r(0.25, 0.6)(rng)}, _scale),
    EditType("hflip", "spatial", lambda rng: {}, _hflip),
    EditType("vflip", "spatial", lambda rng: {}, _vflip),
    EditType("rotate90", "spatial", lambda rng: {"k": rng.choice([1, 3])}, _rotate90),
    EditType("rotate", "spatial", lambda rng: {"degrees": round(rng.choice([-1, 1]) * rng.uniform(5, 30), 2), "fill": [0, 0, 0]}, _rotate),
    EditType("blur", "spatial", lambda rng: {"radius": _r(1.5, 5.0)(rng)}, _blur),
    EditType("pixelize", "spatial", lambda rng: {"block": rng.randint(4, 14)}, _pixelize),
    EditType("grayscale", "spatial", lambda rng: {}, _grayscale),
    EditType("brightness", "spatial", lambda rng: {"delta": rng.choice([-1, 1]) * rng.randint(30, 80)}, _brightness),
    EditType("contrast", "spatial", lambda rng: {"factor": rng.choice([_r(0.35, 0.7)(rng), _r(1.4, 2.0)(rng)])}, _contrast),
    EditType("hue_shift", "spatial", lambda rng: {"shift": rng.randint(25, 230)}, _hue_shift),
    EditType("noise", "spatial", lambda rng: {"sigma": _r(8.0, 25.0)(rng)}, _noise),
    EditType(
        "text_overlay",
        "spatial",
        lambda rng: {
            "text": " ".join(rng.sample(_WORDS, rng.randint(1, 3))),
            "size": _r(0.06, 0.15)(rng),
            "x": _r(0.0, 0.6)(rng),
            "y": _r(0.0, 0.85)(rng),
            "color": [rng.randrange(256) for _ in range(3)],
        },
        _text_overlay,
    ),
    EditType("shape_overlay", "spatial", _sample_shapes, _shape_overlay),
    EditType("pad", "spatial", _sample_pad, _pad),
    EditType("picture_in_picture", "spatial", _sample_pip, _picture_in_picture, needs_other=True),
    EditType("hstack", "spatial", lambda rng: {"other_width": _r(0.5, 1.0)(rng), "other_first": rng.random() < 0.5}, _hstack, needs_other=True),
    EditType("vstack", "spatial", lambda rng: {"other_height": _r(0.5, 1.0)(rng), "other_first": rng.random() < 0.5}, _vstack, needs_other=True),
    EditType("blend", "spatial", lambda rng: {"alpha": _r(0.5, 0.8)(rng)}, _blend, needs_other=True),
    EditType("perspective", "spatial", lambda rng: {"corners": [_r(0.0, 0.18)(rng) for _ in range(8)]}, _perspective),
    EditType("negate", "spatial", lambda rng: {}, _negate),
    # Ratio of reference time to query time: >1 plays the copy faster.
    EditType("speed", "temporal", lambda rng: {"factor": rng.choice([0.5, 0.667, 0.8, 1.25, 1.5, 2.0])}),
    EditType("frame_rate", "temporal", lambda rng: {"fps": rng.choice(["15/1", "24000/1001", "25/1", "12/1"])}),
    EditType("low_bitrate", "encoding", lambda rng: {"crf": rng.randint(38, 46)}),
)

EDIT_REGISTRY: dict[str, EditType] = {edit.name: edit for edit in EDIT_TYPES}
# Mutually exclusive groups: at most one of each per segment (they would undo or hide each other).
_EXCLUSIVE = ({"hflip", "vflip", "rotate90", "rotate", "perspective"}, {"grayscale", "hue_shift", "negate"}, {"blur", "pixelize", "scale"})


def sample_edits(rng: random.Random, count: int, *, allowed: Sequence[str] | None = None) -> list[AppliedEdit]:
    """Draw ``count`` distinct edits with their parameters.

    At most one edit that needs other footage, and at most one of each mutually exclusive group.

    Args:
        rng: the random generator (the only source of randomness, for reproducible plans).
        count: number of edits (1-3 in the dataset).
        allowed: edit names to draw from (default: all registered edits).

    Returns:
        The edits in application order (spatial edits first, in draw order).
    """
    names = list(allowed) if allowed is not None else [e.name for e in EDIT_TYPES]
    unknown = [n for n in names if n not in EDIT_REGISTRY]
    if unknown:
        raise ValueError(f"unknown edits {unknown}; allowed: {sorted(EDIT_REGISTRY)}")
    if count < 0 or count > len(names):
        raise ValueError(f"count must be in [0, {len(names)}], got {count}")
    chosen: list[str] = []
    candidates = list(names)
    while len(chosen) < count and candidates:
        name = rng.choice(candidates)
        candidates.remove(name)
        if EDIT_REGISTRY[name].needs_other and any(EDIT_REGISTRY[c].needs_other for c in chosen):
            continue
        if any(name in group and group & set(chosen) for group in _EXCLUSIVE):
            continue
        chosen.append(name)
    return [AppliedEdit(name, EDIT_REGISTRY[name].sample(rng)) for name in chosen]


def apply_spatial_edits(frame: Frame, edits: Sequence[AppliedEdit], context: EditContext) -> Frame:
    """Apply the spatial edits of ``edits`` in order (temporal and encoding edits are skipped).

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        edits: edits drawn by ``sample_edits``.
        context: frame index, seed and the unrelated frame for edits that need one.

    Returns:
        The edited frame, uint8 RGB; its size may differ (crop, pad, stacking, rotate90).
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got shape {frame.shape} dtype {frame.dtype}")
    for edit in edits:
        edit_type = EDIT_REGISTRY[edit.name]
        if edit_type.kind != "spatial":
            continue
        if edit_type.needs_other and context.other is None:
            raise ValueError(f"edit {edit.name!r} needs other footage (EditContext.other)")
        other = context.other
        if other is not None and other.shape != frame.shape:
            other = _resize(other, frame.shape[1], frame.shape[0])
        frame = edit_type.apply(frame, edit.params, EditContext(context.frame_index, context.seed, other))
    return frame
