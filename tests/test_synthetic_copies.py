"""Synthetic copies (onnx_export.synthetic_copies): every edit runs, exact edits match numpy oracles, runs are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("augly")

from onnx_export.synthetic_copies import (
    AUGLY_EDITS,
    EDITS,
    MIN_SIDE,
    OWN_EDITS,
    TWO_IMAGE_EDITS,
    apply_edit,
    make_copy,
    synthetic_copies,
)


def _image(seed: int, h: int = 60, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 10, axis=0), 10, axis=1)[:h, :w].copy()


def test_edit_sets_are_disjoint_and_cover_the_vsc_edits():
    assert not set(AUGLY_EDITS) & set(OWN_EDITS)
    for name in ("overlay_emoji", "overlay_text", "pad", "crop", "rotate", "blur", "pixelization", "color_jitter",
                 "grayscale", "perspective", "opacity", "overlay_onto_screenshot", "meme_format", "hstack", "vstack",
                 "picture_in_picture", "blend", "hflip", "vflip", "rotate90", "negate", "hue_shift"):
        assert name in EDITS
    assert TWO_IMAGE_EDITS <= set(OWN_EDITS)


@pytest.mark.parametrize("name", sorted(EDITS))
def test_every_edit_returns_an_rgb_image(name):
    rng = np.random.default_rng(1)
    out = apply_edit(name, _image(0), rng, _image(1, 80, 50))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert min(out.shape[:2]) >= MIN_SIDE


def test_exact_edits_match_numpy():
    image, other, rng = _image(0), _image(1), np.random.default_rng(0)
    np.testing.assert_array_equal(apply_edit("negate", image, rng, other), 255 - image)
    np.testing.assert_array_equal(apply_edit("hflip", image, rng, other), image[:, ::-1])
    np.testing.assert_array_equal(apply_edit("vflip", image, rng, other), image[::-1])
    rotated = apply_edit("rotate90", image, rng, other)
    assert any(rotated.shape == np.rot90(image, k).shape and np.array_equal(rotated, np.rot90(image, k)) for k in (1, 2, 3))
    gray = apply_edit("grayscale", image, rng, other).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1 and np.abs(gray[..., 1] - gray[..., 2]).max() <= 1


def test_stacking_puts_both_images_side_by_side():
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((40, 40, 3), np.uint8)
    blue[..., 2] = 255
    out = apply_edit("hstack", red, np.random.default_rng(3), blue)
    assert out.shape[0] == 40 and out.shape[1] > 60
    assert (out[..., 0] == 255).all(axis=0).sum() >= 59  # the red image's columns, whole
    assert (out[..., 2] == 255).all(axis=0).sum() >= 20  # the other image's columns


def test_unknown_edit_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown edit 'nope'"):
        apply_edit("nope", _image(0), np.random.default_rng(0), _image(1))


def test_copies_are_reproducible_and_take_the_second_image_from_another_group():
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((48, 64, 3), np.uint8)
    blue[..., 2] = 255
    images, groups = [red, red.copy(), blue], ["r", "r", "b"]
    a = synthetic_copies(images, groups, copies_per_image=6, seed=5)
    b = synthetic_copies(images, groups, copies_per_image=6, seed=5)
    c = synthetic_copies(images, groups, copies_per_image=6, seed=6)
    assert [x.edits for x in a] == [x.edits for x in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert [x.edits for x in a] != [x.edits for x in c]
    assert [x.source for x in a] == [0] * 6 + [1] * 6 + [2] * 6
    for copy in a:
        assert 1 <= len(copy.edits) <= 3 and len(set(copy.edits)) == len(copy.edits)
        assert len(TWO_IMAGE_EDITS & set(copy.edits)) <= 1
    # Force a two-image edit: a red original's partner is always the blue image (the only other group).
    out, _ = make_copy(red, blue, np.random.default_rng(0), edits=["hstack"])
    assert (out[..., 2] == 255).any()


def test_bad_inputs():
    with pytest.raises(ValueError, match="groups"):
        synthetic_copies([_image(0)], ["a", "b"])
    with pytest.raises(ValueError, match="two groups"):
        synthetic_copies([_image(0), _image(1)], ["a", "a"])
