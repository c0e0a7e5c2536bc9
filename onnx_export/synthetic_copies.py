"""Synthetic copies of the training images: the image edits of copy detection, for fitting a learned whitening.

    copies = synthetic_copies(images, groups, copies_per_image=4, seed=0)

Each copy is one training image with 1-3 edits chained in random order. The edits are those VSC
used for its queries, with their own (wider, independently chosen) parameter ranges, so a
projection fitted on them does not learn ``benchmarks/edits.py``'s exact settings:

- Meta's AugLy (``augly.image``, MIT licence) where it works with this project's Pillow/numpy:
  ``overlay_emoji``, ``overlay_text``, ``pad``, ``crop``, ``rotate``, ``blur``, ``pixelization``,
  ``color_jitter``, ``grayscale``, ``opacity`` (composited on a plain background),
  ``overlay_onto_screenshot``, ``encoding_quality``, ``random_noise``, ``scale``, ``overlay_stripes``,
  ``change_aspect_ratio``, ``sharpen``, ``hflip``, ``vflip``, ``skew``;
- our own numpy/Pillow code for what AugLy lacks or cannot run here: ``perspective`` (AugLy's
  ``perspective_transform`` uses ``np.float``, removed in numpy 2), ``meme_format`` (AugLy's uses
  ``FreeTypeFont.getsize_multiline``, removed in Pillow 10), ``rotate90``, ``negate``,
  ``hue_shift``, and the edits that need a second image: ``hstack``, ``vstack``,
  ``picture_in_picture`` (either image inset into the other), ``blend``.

The second image of a two-image edit always comes from another ``group`` (another shot or
picture), so a copy never shows two views of one scene. Everything is drawn from one
``numpy.random.Generator`` seeded by ``seed``: the same inputs give the same copies.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# (image, rng, other image) -> edited image; all PIL RGB.
EditFn = Callable[["PIL.Image.Image", np.random.Generator, "PIL.Image.Image"], "PIL.Image.Image"]  # noqa: F821


@dataclass(frozen=True)
class SyntheticCopy:
    """One edited copy of a training image.

    Attributes:
        source: index of the original in the input list.
        edits: the edit names, in the order applied.
        image: (H, W, 3) uint8 RGB.
    """

    source: int
    edits: tuple[str, ...]
    image: np.ndarray


def _augly():
    import augly.image as imaugs

    return imaugs


def _augly_dir(name: str) -> str:
    import augly.utils

    return getattr(augly.utils, name)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _rgb(image) -> PIL.Image.Image:  # noqa: F821
    from PIL import Image

    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (0, 0, 0))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


# ------------------------------------------------------------------ AugLy edits

# AugLy fonts that render Latin text with this Pillow (some of its fonts fail in libraqm here).
TEXT_FONTS = ("Montserrat-Bold.ttf", "Raleway-Regular.ttf", "IBMPlexSans-Medium.ttf", "IBMPlexSerif-Bold.ttf",
              "OpenSans-Regular.ttf", "Impact.ttf", "Ubuntu-B.ttf", "SourceSansPro-Black.ttf", "Lobster_1.3.ttf",
              "Pacifico.ttf", "Quicksand-Bold.ttf", "Titillium-Bold.ttf")


def _emoji(image, rng, other):
    folder = os.path.join(_augly_dir("EMOJI_DIR"), "smileys")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    size = float(rng.uniform(0.15, 0.45))
    return _augly().overlay_emoji(image, emoji_path=os.path.join(folder, files[rng.integers(len(files))]),
                                  opacity=float(rng.uniform(0.6, 1.0)), emoji_size=size,
                                  x_pos=float(rng.uniform(0, 1 - size)), y_pos=float(rng.uniform(0, 1 - size)))


def _text(image, rng, other):
    length = int(rng.integers(4, 16))
    return _augly().overlay_text(image, text=[int(i) for i in rng.integers(0, 60, length)],
                                 font_file=os.path.join(_augly_dir("FONTS_DIR"), TEXT_FONTS[rng.integers(len(TEXT_FONTS))]),
                                 font_size=float(rng.uniform(0.08, 0.25)), opacity=float(rng.uniform(0.6, 1.0)),
                                 color=_colour(rng), x_pos=float(rng.uniform(0, 0.4)), y_pos=float(rng.uniform(0, 0.8)))


def _pad(image, rng, other):
    return _augly().pad(image, w_factor=float(rng.uniform(0.05, 0.5)), h_factor=float(rng.uniform(0.05, 0.5)), color=_colour(rng))


def _crop(image, rng, other):
    w, h = float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.4, 0.9))
    x1, y1 = float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h))
    return _augly().crop(image, x1=x1, y1=y1, x2=x1 + w, y2=y1 + h)


def _rotate(image, rng, other):
    return _augly().rotate(image, degrees=float(rng.choice([-1, 1]) * rng.uniform(5, 40)))


def _blur(image, rng, other):
    return _augly().blur(image, radius=float(rng.uniform(1.0, 5.0)))


def _pixelize(image, rng, other):
    return _augly().pixelization(image, ratio=float(rng.uniform(0.08, 0.4)))


def _colour_jitter(image, rng, other):
    return _augly().color_jitter(image, brightness_factor=float(rng.uniform(0.4, 1.8)), contrast_factor=float(rng.uniform(0.4, 1.8)),
                                 saturation_factor=float(rng.uniform(0.0, 2.5)))


def _grayscale(image, rng, other):
    return _augly().grayscale(image)


def _opacity(image, rng, other):
    from PIL import Image

    faded = _augly().opacity(image.convert("RGBA"), level=float(rng.uniform(0.3, 0.8)))
    background = Image.new("RGBA", faded.size, _colour(rng) + (255,))
    return Image.alpha_composite(background, faded).convert("RGB")


def _screenshot(image, rng, other):
    folder = _augly_dir("SCREENSHOT_TEMPLATES_DIR")
    template = ("web.png", "mobile.png")[int(rng.integers(2))]
    with warnings.catch_warnings():  # AugLy opens bboxes.json without closing it; the leak is reported here
        warnings.simplefilter("ignore", ResourceWarning)
        out = _augly().overlay_onto_screenshot(image, template_filepath=os.path.join(folder, template),
                                               template_bboxes_filepath=os.path.join(folder, "bboxes.json"),
                                               crop_src_to_fit=bool(rng.integers(2)))
        gc.collect()
    return out


def _jpeg(image, rng, other):
    return _augly().encoding_quality(image, quality=int(rng.integers(5, 30)))


def _noise(image, rng, other):
    return _augly().random_noise(image, var=float(rng.uniform(0.002, 0.03)), seed=int(rng.integers(2**31)))


def _scale(image, rng, other):
    return _augly().scale(image, factor=float(rng.uniform(0.2, 0.6)))


def _stripes(image, rng, other):
    return _augly().overlay_stripes(image, line_width=float(rng.uniform(0.1, 0.5)), line_color=_colour(rng),
                                    line_angle=float(rng.uniform(-90, 90)), line_density=float(rng.uniform(0.2, 0.6)),
                                    line_opacity=float(rng.uniform(0.3, 0.8)))


def _aspect(image, rng, other):
    return _augly().change_aspect_ratio(image, ratio=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))


def _sharpen(image, rng, other):
    return _augly().sharpen(image, factor=float(rng.uniform(2.0, 10.0)))


def _hflip(image, rng, other):
    return _augly().hflip(image)


def _vflip(image, rng, other):
    return _augly().vflip(image)


def _skew(image, rng, other):
    return _augly().skew(image, skew_factor=float(rng.uniform(-0.6, 0.6)), axis=int(rng.integers(2)))


# ------------------------------------------------------------------ own edits


def _perspective(image, rng, other):
    from PIL import Image

    w, h = image.size
    s = float(rng.uniform(0.05, 0.25))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    moved = corners + rng.uniform(-s, s, (4, 2)) * [w, h]
    # Coefficients mapping output (moved) coordinates back to input corners.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(moved, corners):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    return image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR, fillcolor=_colour(rng))


def _meme(image, rng, other):
    from PIL import Image, ImageDraw, ImageFont

    w, h = image.size
    band = int(h * rng.uniform(0.15, 0.4))
    out = Image.new("RGB", (w, h + band), _colour(rng) if rng.random() < 0.3 else (255, 255, 255))
    out.paste(image, (0, band))
    font_dir = _augly_dir("FONTS_DIR")
    font = ImageFont.truetype(os.path.join(font_dir, "Raleway-ExtraLightItalic.ttf" if rng.random() < 0.5 else "Montserrat-Thin.ttf"),
                              max(8, band // 3))
    words = ["".join(chr(int(c)) for c in rng.integers(97, 123, rng.integers(2, 8))) for _ in range(rng.integers(2, 5))]
    ImageDraw.Draw(out).text((int(w * 0.05), band // 4), " ".join(words).upper(), fill=(0, 0, 0), font=font)
    return out


def _rotate90(image, rng, other):
    from PIL import Image

    return image.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[int(rng.integers(3))])


def _negate(image, rng, other):
    from PIL import Image

    return Image.fromarray(255 - np.asarray(image))


def _hue_shift(image, rng, other):
    from PIL import Image

    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(30, 226))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _stack(image, rng, other, axis: int):
    from PIL import Image

    w, h = image.size
    if axis == 1:  # side by side, other resized to the same height
        o = other.resize((max(1, int(other.width * h / other.height * rng.uniform(0.6, 1.4))), h), Image.Resampling.BILINEAR)
        out = Image.new("RGB", (w + o.width, h))
        pair = (image, o) if rng.random() < 0.5 else (o, image)
        out.paste(pair[0], (0, 0))
        out.paste(pair[1], (pair[0].width, 0))
    else:
        o = other.resize((w, max(1, int(other.height * w / other.width * rng.uniform(0.6, 1.4)))), Image.Resampling.BILINEAR)
        out = Image.new("RGB", (w, h + o.height))
        pair = (image, o) if rng.random() < 0.5 else (o, image)
        out.paste(pair[0], (0, 0))
        out.paste(pair[1], (0, pair[0].height))
    return out


def _hstack(image, rng, other):
    return _stack(image, rng, other, 1)


def _vstack(image, rng, other):
    return _stack(image, rng, other, 0)


def _picture_in_picture(image, rng, other):
    from PIL import Image

    inner_is_copy = rng.random() < 0.5  # the copy inset into another image, or another image over the copy
    background, inner = (other, image) if inner_is_copy else (image, other)
    background = background.resize(image.size, Image.Resampling.BILINEAR) if inner_is_copy else background.copy()
    scale = float(rng.uniform(0.4, 0.75)) if inner_is_copy else float(rng.uniform(0.2, 0.4))
    iw, ih = max(1, int(background.width * scale)), max(1, int(background.height * scale))
    inner = inner.resize((iw, ih), Image.Resampling.BILINEAR)
    background.paste(inner, (int(rng.integers(0, background.width - iw + 1)), int(rng.integers(0, background.height - ih + 1))))
    return background


def _blend(image, rng, other):
    from PIL import Image

    return Image.blend(image, other.resize(image.size, Image.Resampling.BILINEAR), float(rng.uniform(0.2, 0.5)))


AUGLY_EDITS: dict[str, EditFn] = {
    "overlay_emoji": _emoji, "overlay_text": _text, "pad": _pad, "crop": _crop, "rotate": _rotate, "blur": _blur,
    "pixelization": _pixelize, "color_jitter": _colour_jitter, "grayscale": _grayscale, "opacity": _opacity,
    "overlay_onto_screenshot": _screenshot, "encoding_quality": _jpeg, "random_noise": _noise, "scale": _scale,
    "overlay_stripes": _stripes, "change_aspect_ratio": _aspect, "sharpen": _sharpen, "hflip": _hflip, "vflip": _vflip,
    "skew": _skew,
}
OWN_EDITS: dict[str, EditFn] = {
    "perspective": _perspective, "meme_format": _meme, "rotate90": _rotate90, "negate": _negate, "hue_shift": _hue_shift,
    "hstack": _hstack, "vstack": _vstack, "picture_in_picture": _picture_in_picture, "blend": _blend,
}
EDITS: dict[str, EditFn] = {**AUGLY_EDITS, **OWN_EDITS}
# At most one edit per copy that puts a second image into it.
TWO_IMAGE_EDITS = frozenset({"hstack", "vstack", "picture_in_picture", "blend"})
MIN_SIDE = 16


def apply_edit(name: str, image: np.ndarray, rng: np.random.Generator, other: np.ndarray) -> np.ndarray:
    """One named edit of an (H, W, 3) uint8 RGB image (``other``: the second image where the edit needs one)."""
    from PIL import Image

    if name not in EDITS:
        raise KeyError(f"unknown edit {name!r}; known: {sorted(EDITS)}")
    out = _rgb(EDITS[name](Image.fromarray(image), rng, Image.fromarray(other)))
    if min(out.size) < MIN_SIDE:  # e.g. scale after crop on a small image: keep a usable size
        factor = MIN_SIDE / min(out.size)
        out = out.resize((max(MIN_SIDE, round(out.width * factor)), max(MIN_SIDE, round(out.height * factor))), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def make_copy(image: np.ndarray, other: np.ndarray, rng: np.random.Generator, edits: Sequence[str] | None = None,
              max_edits: int = 3) -> tuple[np.ndarray, tuple[str, ...]]:
    """A copy of ``image`` with ``edits`` (default: 1..max_edits random edits, at most one two-image edit)."""
    if edits is None:
        names = sorted(EDITS)
        count = int(rng.integers(1, max_edits + 1))
        chosen: list[str] = []
        while len(chosen) < count:
            name = names[int(rng.integers(len(names)))]
            if name in chosen or (name in TWO_IMAGE_EDITS and TWO_IMAGE_EDITS & set(chosen)):
                continue
            chosen.append(name)
        edits = chosen
    out = image
    for name in edits:
        out = apply_edit(name, out, rng, other)
    return out, tuple(edits)


def synthetic_copies(images: Sequence[np.ndarray], groups: Sequence[str], copies_per_image: int = 4, seed: int = 0,
                     max_edits: int = 3) -> list[SyntheticCopy]:
    """``copies_per_image`` edited copies of every image, each with a second image from another group.

    Args:
        images: (H, W, 3) uint8 RGB originals (any sizes).
        groups: one group id per image; the second image of a copy comes from a different group.
        copies_per_image: copies per original.
        seed: seeds every random choice.
        max_edits: edits per copy are drawn from 1..max_edits.
    """
    if len(images) != len(groups):
        raise ValueError(f"{len(images)} images but {len(groups)} groups")
    if len(set(groups)) < 2:
        raise ValueError("need images from at least two groups (two-image edits take the second image from another group)")
    rng = np.random.default_rng(seed)
    out = []
    for i, image in enumerate(images):
        for _ in range(copies_per_image):
            j = int(rng.integers(len(images)))
            while groups[j] == groups[i]:
                j = int(rng.integers(len(images)))
            copy, edits = make_copy(image, images[j], rng, max_edits=max_edits)
            out.append(SyntheticCopy(i, edits, copy))
    return out


def load_pack_rgb(pack: str | os.PathLike, limit: int | None = None) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The training pack's images at their stored size (``onnx_export.training_pack``), sha256-checked.

    Returns:
        (RGB images, group per image, id per image).
    """
    import io
    import tarfile

    from PIL import Image

    from onnx_export.training_pack import MANIFEST_MEMBER, sha256_bytes

    images, groups, ids = [], [], []
    with tarfile.open(pack) as tar:
        import json

        manifest = json.loads(tar.extractfile(MANIFEST_MEMBER).read())
        for entry in manifest["images"][:limit] if limit else manifest["images"]:
            data = tar.extractfile(entry["file"]).read()
            if sha256_bytes(data) != entry["sha256"]:
                raise ValueError(f"{pack}: {entry['file']} does not match its sha256")
            with Image.open(io.BytesIO(data)) as image:
                images.append(np.asarray(image.convert("RGB")))
            groups.append(entry["group"])
            ids.append(entry["id"])
    return images, groups, ids
