"""Batched, on-device copy-edit augmentations for SSCD-style training (torch tensor ops only).

Every augmentation works on a float batch ``(B, 3, H, W)`` in ``[0, 1]`` on any device (CPU or
CUDA), draws its per-sample parameters from a ``torch.Generator`` on that device (so a run is
reproducible from its seed and resumable from the generator state), and is applied to a random subset
of the batch (``apply``: a bool mask). They mirror the edits VSC (and ``benchmarks/edits.py``) uses:

- geometry, composed into ONE per-sample homography and sampled once with ``grid_sample``: random
  resized crop, horizontal/vertical flip, 90° rotation, free rotation, perspective, padding
  (content shrunk into a coloured frame); pixels that map outside the source get a fill colour;
- photometric: colour jitter (brightness, contrast, saturation, hue rotation in YIQ), grayscale,
  negation, Gaussian blur (per-sample sigma, grouped separable convolution), pixelisation
  (per-sample block size), Gaussian noise;
- overlays: text, emoji-like faces and shapes from a bank of pre-rendered masks
  (``render_overlay_masks``, Pillow, once at start-up), placed at a random position/scale/colour/opacity;
- other images: blending, picture-in-picture (the copy inset into another image, or another image
  inset over the copy), horizontal/vertical stacking with another image.

``CopyAugment`` chains them with SSCD-like probabilities and returns uint8 batches for the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

OVERLAY_MASK_SIZE = 128


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (sizes relative to the output side)."""

    out_size: int = 224
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_hflip: float = 0.5
    p_vflip: float = 0.1
    p_rot90: float = 0.1
    p_rotate: float = 0.2
    max_rotate_deg: float = 30.0
    p_perspective: float = 0.2
    perspective_strength: float = 0.25
    p_pad: float = 0.1
    pad_scale: tuple[float, float] = (0.6, 0.95)
    p_colour: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p_grayscale: float = 0.15
    p_negate: float = 0.03
    p_overlay: float = 0.3
    p_blend: float = 0.1
    blend_alpha: tuple[float, float] = (0.2, 0.5)
    p_pip: float = 0.1
    p_stack: float = 0.1
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 4.0)
    p_pixelize: float = 0.1
    pixel_fraction: tuple[float, float] = (0.015, 0.06)
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.01, 0.06)


# ---------------------------------------------------------------- helpers


def _rand(gen: torch.Generator, n: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) * (hi - lo) + lo


def _bernoulli(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


def _subset(x: torch.Tensor, apply: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(x[idx], idx)`` written back into a copy of ``x`` for the samples where ``apply`` is set."""
    idx = apply.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    out = x.clone()
    out[idx] = fn(x[idx], idx).to(x.dtype)
    return out


def _base_grid(n: int, size: int, device: torch.device) -> torch.Tensor:
    """(n, size*size, 3) homogeneous output coordinates in [-1, 1] (align_corners=False)."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    grid = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).view(1, -1, 3)
    return grid.expand(n, -1, -1)


def warp(src: torch.Tensor, matrices: torch.Tensor, out_size: int, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``src`` at ``matrices @ (u, v, 1)`` for every output pixel (normalised coordinates).

    Args:
        src: (B, C, H, W) float.
        matrices: (B, 3, 3) homographies from output to source normalised coordinates.
        out_size: output width and height.
        mode: ``grid_sample`` mode.

    Returns:
        (warped (B, C, out, out), coverage mask (B, 1, out, out) in [0, 1]: 0 where outside ``src``).
    """
    n = src.shape[0]
    grid = _base_grid(n, out_size, src.device) @ matrices.transpose(1, 2)
    w = grid[..., 2:3]
    w = torch.where(w.abs() < 1e-6, torch.full_like(w, 1e-6), w)
    grid = (grid[..., :2] / w).view(n, out_size, out_size, 2)
    ones = torch.ones_like(src[:, :1])
    sampled = F.grid_sample(torch.cat([src, ones], 1), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return sampled[:, :-1], sampled[:, -1:]


def _fill_colours(gen: torch.Generator, n: int) -> torch.Tensor:
    """(n, 3, 1, 1): black 60 % of the time, else a random colour."""
    colours = torch.rand(n, 3, generator=gen, device=gen.device)
    black = _bernoulli(gen, n, 0.6)
    return torch.where(black[:, None], torch.zeros_like(colours), colours)[:, :, None, None]


# ---------------------------------------------------------------- geometry (homography factors)


def crop_matrix(gen: torch.Generator, n: int, cfg: AugmentConfig) -> torch.Tensor:
    """Random resized crop: area fraction in ``cfg.crop_scale``, aspect ratio in ``cfg.crop_ratio``."""
    area = _rand(gen, n, *cfg.crop_scale)
    log_ratio = _rand(gen, n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (_rand(gen, n) * 2 - 1) * (1 - w)
    cy = (_rand(gen, n) * 2 - 1) * (1 - h)
    m = _eye(n, gen.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2] = w, h, cx, cy
    return m


def flip_matrix(n: int, horizontal: torch.Tensor, vertical: torch.Tensor) -> torch.Tensor:
    m = _eye(n, horizontal.device)
    m[:, 0, 0] = torch.where(horizontal, -1.0, 1.0)
    m[:, 1, 1] = torch.where(vertical, -1.0, 1.0)
    return m


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angles`` (radians) about the centre (square images: normalised axes are isotropic)."""
    m = _eye(angles.shape[0], angles.device)
    c, s = angles.cos(), angles.sin()
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def perspective_matrix(gen: torch.Generator, n: int, strength: float) -> torch.Tensor:
    """Homography mapping the unit square's corners to corners jittered by up to ``strength`` (of the half side)."""
    device = gen.device
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    src = corners.expand(n, 4, 2)
    dst = src + (torch.rand(n, 4, 2, generator=gen, device=device) * 2 - 1) * strength
    # Solve for H (h33 = 1) with H @ (src, 1) ~ (dst, 1): the standard 8x8 DLT system.
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)
    b = torch.cat([u, v], dim=1)
    h = torch.linalg.solve(a, b.unsqueeze(-1)).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, device=device)], dim=1).view(n, 3, 3)


def rect_matrix(x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    """Maps the output rectangle ``[x0, x1] x [y0, y1]`` (normalised) onto the whole source."""
    n = x0.shape[0]
    m = _eye(n, x0.device)
    sx, sy = (x1 - x0) / 2, (y1 - y0) / 2
    m[:, 0, 0], m[:, 1, 1] = 1 / sx, 1 / sy
    m[:, 0, 2], m[:, 1, 2] = -(x0 + x1) / 2 / sx, -(y0 + y1) / 2 / sy
    return m


def pad_matrix(gen: torch.Generator, n: int, cfg: AugmentConfig) -> torch.Tensor:
    """Content shrunk into a random sub-rectangle (letter/pillar-box or a frame); the rest is filled."""
    sx = _rand(gen, n, *cfg.pad_scale)
    sy = _rand(gen, n, *cfg.pad_scale)
    # Half the time only one axis is padded (letter- or pillar-box).
    one_axis = _bernoulli(gen, n, 0.5)
    horizontal = _bernoulli(gen, n, 0.5)
    sx = torch.where(one_axis & ~horizontal, torch.ones_like(sx), sx)
    sy = torch.where(one_axis & horizontal, torch.ones_like(sy), sy)
    cx = (_rand(gen, n) * 2 - 1) * (1 - sx)
    cy = (_rand(gen, n) * 2 - 1) * (1 - sy)
    return rect_matrix(cx - sx, cy - sy, cx + sx, cy + sy)


GEOMETRIC = ("crop", "hflip", "vflip", "rot90", "rotate", "perspective", "pad")


def geometric_matrices(gen: torch.Generator, n: int, cfg: AugmentConfig,
                       force: tuple[str, ...] | None = None) -> torch.Tensor:
    """The composed output->source homography per sample.

    Args:
        gen: generator on the target device.
        n: batch size.
        cfg: probabilities and ranges.
        force: if given, apply exactly these components (probability 1) and no others (tests).

    Returns:
        (n, 3, 3).
    """
    device = gen.device

    def on(name: str, p: float) -> torch.Tensor:
        if force is not None:
            return torch.full((n,), name in force, dtype=torch.bool, device=device)
        return _bernoulli(gen, n, p)

    eye = _eye(n, device)

    def pick(mask: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.where(mask[:, None, None], m, eye)

    crop = pick(on("crop", 1.0), crop_matrix(gen, n, cfg))
    flips = flip_matrix(n, on("hflip", cfg.p_hflip), on("vflip", cfg.p_vflip))
    quarter = torch.randint(1, 4, (n,), generator=gen, device=device).float() * (math.pi / 2)
    rot90 = pick(on("rot90", cfg.p_rot90), rotation_matrix(quarter))
    # |angle| in [3 deg, max]: smaller rotations are not worth a resampling.
    sign = torch.where(_bernoulli(gen, n, 0.5), 1.0, -1.0)
    angles = sign * _rand(gen, n, math.radians(3.0), math.radians(cfg.max_rotate_deg))
    rotate = pick(on("rotate", cfg.p_rotate), rotation_matrix(angles))
    persp = pick(on("perspective", cfg.p_perspective), perspective_matrix(gen, n, cfg.perspective_strength))
    pad = pick(on("pad", cfg.p_pad), pad_matrix(gen, n, cfg))
    # source <- crop <- flips <- rot90 <- rotate <- perspective <- pad <- output
    return crop @ flips @ rot90 @ rotate @ persp @ pad


def apply_geometry(src: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig,
                   force: tuple[str, ...] | None = None) -> torch.Tensor:
    """Warps ``src`` (B, 3, S, S) to (B, 3, out, out) with ``geometric_matrices``; uncovered pixels are filled."""
    n = src.shape[0]
    matrices = geometric_matrices(gen, n, cfg, force)
    warped, coverage = warp(src, matrices, cfg.out_size)
    fill = _fill_colours(gen, n)
    return warped + (1 - coverage) * fill


# ---------------------------------------------------------------- photometric


def colour_jitter(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (factors around 1) and hue rotation (YIQ), per sample."""

    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n = v.shape[0]
        b = _rand(gen, n, 1 - cfg.brightness, 1 + cfg.brightness)[:, None, None, None]
        c = _rand(gen, n, 1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None]
        s = _rand(gen, n, 1 - cfg.saturation, 1 + cfg.saturation)[:, None, None, None]
        h = _rand(gen, n, -cfg.hue, cfg.hue) * 2 * math.pi
        v = (v * b).clamp(0, 1)
        mean = _gray(v).mean(dim=(2, 3), keepdim=True)
        v = ((v - mean) * c + mean).clamp(0, 1)
        g = _gray(v)
        v = ((v - g) * s + g).clamp(0, 1)
        return _hue_rotate(v, h).clamp(0, 1)

    return _subset(x, apply, fn)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _hue_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    to_yiq = _RGB_TO_YIQ.to(x.device)
    from_yiq = torch.linalg.inv(to_yiq)
    n = x.shape[0]
    rot = torch.zeros(n, 3, 3, device=x.device)
    c, s = angles.cos(), angles.sin()
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = from_yiq @ rot @ to_yiq
    return torch.einsum("nij,njhw->nihw", m, x)


def grayscale(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor) -> torch.Tensor:
    return _subset(x, apply, lambda v, idx: _gray(v).expand(-1, 3, -1, -1))


def negate(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor) -> torch.Tensor:
    return _subset(x, apply, lambda v, idx: 1 - v)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (pixels at the output size), one grouped conv per axis."""

    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n, c, h, w = v.shape
        sigma = _rand(gen, n, *cfg.blur_sigma)
        radius = math.ceil(3 * cfg.blur_sigma[1])
        radius = min(radius, (min(h, w) - 1) // 2)
        offsets = torch.arange(-radius, radius + 1, device=v.device, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        kernel = kernel.repeat_interleave(c, dim=0)  # (n*c, K)
        flat = v.reshape(1, n * c, h, w)
        flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
        flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
        return flat.view(n, c, h, w)

    return _subset(x, apply, fn)


def pixelize(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor) -> torch.Tensor:
    """Blocks of a per-sample size (a fraction of the side) take the average colour of the block."""

    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n, _, h, w = v.shape
        block = (_rand(gen, n, *cfg.pixel_fraction) * w).clamp(min=2.0)
        coords = torch.arange(w, device=v.device, dtype=torch.float32) + 0.5
        # Block index -> block centre, in pixels, then normalised; a box pre-filter of the block size
        # (avg pooling at the smallest block) plus bilinear sampling at block centres approximates the mean.
        centres = (torch.floor(coords[None] / block[:, None]) + 0.5) * block[:, None]
        centres = centres.clamp(max=w - 0.5) * 2 / w - 1
        gx = centres[:, None, :].expand(n, h, w)
        gy = centres[:, :, None].expand(n, h, w)
        k = max(1, int(block.min().item()))
        smooth = F.avg_pool2d(v, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False)[:, :, :h, :w]
        return F.grid_sample(smooth, torch.stack([gx, gy], dim=-1), mode="nearest", align_corners=False)

    return _subset(x, apply, fn)


def gaussian_noise(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor) -> torch.Tensor:
    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        std = _rand(gen, v.shape[0], *cfg.noise_std)[:, None, None, None]
        noise = torch.randn(v.shape, generator=gen, device=v.device)
        return (v + noise * std).clamp(0, 1)

    return _subset(x, apply, fn)


# ---------------------------------------------------------------- overlays


def render_overlay_masks(count: int = 96, size: int = OVERLAY_MASK_SIZE, seed: int = 0) -> np.ndarray:
    """Pre-renders text, emoji-like faces and shapes as 2-channel masks (body, details), with Pillow.

    Args:
        count: number of masks (a third text, a third faces/hearts/stars, a third shapes).
        size: mask width and height.
        seed: rendering randomness (strings, shapes).

    Returns:
        float32 (count, 2, size, size) in [0, 1].
    """
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!?#@&"
    masks = np.zeros((count, 2, size, size), np.float32)
    for i in range(count):
        body = Image.new("L", (size, size), 0)
        detail = Image.new("L", (size, size), 0)
        db, dd = ImageDraw.Draw(body), ImageDraw.Draw(detail)
        kind = i % 3
        if kind == 0:  # text: 1-2 lines of random "words"
            try:
                font = ImageFont.load_default(size=int(rng.integers(20, 40)))
            except TypeError:  # Pillow < 10.1: fixed-size bitmap font
                font = ImageFont.load_default()
            lines = []
            for _ in range(int(rng.integers(1, 3))):
                words = ["".join(rng.choice(list(alphabet), int(rng.integers(2, 8)))) for _ in range(int(rng.integers(1, 3)))]
                lines.append(" ".join(words))
            y = int(rng.integers(0, size // 3))
            for line in lines:
                db.text((int(rng.integers(0, size // 4)), y), line, fill=255, font=font)
                y += size // 3
        elif kind == 1:  # emoji-like: smiley, heart, star
            sub = i // 3 % 3
            m = size * 0.1
            if sub == 0:
                db.ellipse([m, m, size - m, size - m], fill=255)
                e = size * 0.08
                for cx in (size * 0.36, size * 0.64):
                    dd.ellipse([cx - e, size * 0.38 - e, cx + e, size * 0.38 + e], fill=255)
                dd.arc([size * 0.3, size * 0.4, size * 0.7, size * 0.72], 20, 160, fill=255, width=max(2, size // 24))
            elif sub == 1:
                t = np.linspace(0, 2 * np.pi, 64)
                hx = 16 * np.sin(t) ** 3
                hy = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
                pts = [(size / 2 + px * size / 40, size / 2 - py * size / 40) for px, py in zip(hx, hy)]
                db.polygon(pts, fill=255)
            else:
                pts = []
                for k in range(10):
                    r = size * (0.45 if k % 2 == 0 else 0.2)
                    a = -np.pi / 2 + k * np.pi / 5
                    pts.append((size / 2 + r * np.cos(a), size / 2 + r * np.sin(a)))
                db.polygon(pts, fill=255)
        else:  # shapes: box, circle ring, triangle, bar
            sub = int(rng.integers(0, 4))
            x0, y0 = rng.uniform(0, 0.3, 2) * size
            x1, y1 = rng.uniform(0.7, 1.0, 2) * size
            if sub == 0:
                db.rectangle([x0, y0, x1, y1], fill=255)
            elif sub == 1:
                db.ellipse([x0, y0, x1, y1], outline=255, width=max(3, size // 12))
            elif sub == 2:
                db.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=255)
            else:
                db.rectangle([0, size * 0.4, size, size * 0.6], fill=255)
        masks[i, 0] = np.asarray(body, np.float32) / 255
        masks[i, 1] = np.asarray(detail, np.float32) / 255
    return masks


def overlay(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor,
            masks: torch.Tensor) -> torch.Tensor:
    """Pastes one random mask per sample: random scale (20-70 % of the side), position, colours, opacity."""

    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n, _, _, size = v.shape
        which = torch.randint(0, masks.shape[0], (n,), generator=gen, device=gen.device)
        scale = _rand(gen, n, 0.2, 0.7)
        cx = _rand(gen, n, -0.8, 0.8)
        cy = _rand(gen, n, -0.8, 0.8)
        placed, _ = warp(masks[which], rect_matrix(cx - scale, cy - scale, cx + scale, cy + scale), size)
        body_colour = torch.rand(n, 3, 1, 1, generator=gen, device=gen.device)
        detail_colour = torch.rand(n, 3, 1, 1, generator=gen, device=gen.device) * 0.3
        opacity = _rand(gen, n, 0.6, 1.0)[:, None, None, None]
        a_body = placed[:, 0:1] * opacity
        a_detail = placed[:, 1:2] * opacity
        v = v * (1 - a_body) + body_colour * a_body
        return v * (1 - a_detail) + detail_colour * a_detail

    return _subset(x, apply, fn)


# ---------------------------------------------------------------- other images


def blend(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor,
          others: torch.Tensor) -> torch.Tensor:
    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        alpha = _rand(gen, v.shape[0], *cfg.blend_alpha)[:, None, None, None]
        return v * (1 - alpha) + others[idx] * alpha

    return _subset(x, apply, fn)


def _place(background: torch.Tensor, content: torch.Tensor, x0, y0, x1, y1) -> torch.Tensor:
    placed, coverage = warp(content, rect_matrix(x0, y0, x1, y1), background.shape[-1])
    return background * (1 - coverage) + placed


def picture_in_picture(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor,
                       others: torch.Tensor) -> torch.Tensor:
    """Half the samples: the copy inset (40-80 % of the side) into another image; else another image
    inset (25-50 %) over the copy."""

    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n = v.shape[0]
        copy_inside = _bernoulli(gen, n, 0.5)
        scale = torch.where(copy_inside, _rand(gen, n, 0.4, 0.8), _rand(gen, n, 0.25, 0.5))
        cx = (_rand(gen, n) * 2 - 1) * (1 - scale)
        cy = (_rand(gen, n) * 2 - 1) * (1 - scale)
        o = others[idx]
        mask = copy_inside[:, None, None, None]
        background = torch.where(mask, o, v)
        content = torch.where(mask, v, o)
        return _place(background, content, cx - scale, cy - scale, cx + scale, cy + scale)

    return _subset(x, apply, fn)


def stack(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, apply: torch.Tensor,
          others: torch.Tensor) -> torch.Tensor:
    """hstack or vstack with another image (each squashed into its half), the copy on a random side."""

    def fn(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n = v.shape[0]
        vertical = _bernoulli(gen, n, 0.5)
        copy_first = _bernoulli(gen, n, 0.5)
        minus, zero, plus = torch.full((n,), -1.0, device=v.device), torch.zeros(n, device=v.device), torch.ones(n, device=v.device)
        # First half: left (h) or top (v); second: right or bottom.
        first = (minus, minus, torch.where(vertical, plus, zero), torch.where(vertical, zero, plus))
        second = (torch.where(vertical, minus, zero), torch.where(vertical, zero, minus), plus, plus)
        o = others[idx]
        cf = copy_first[:, None, None, None]
        out = torch.zeros_like(v)
        out = _place(out, torch.where(cf, v, o), *first)
        return _place(out, torch.where(cf, o, v), *second)

    return _subset(x, apply, fn)


# ---------------------------------------------------------------- the chain


# name -> (function kind, probability attribute); geometric components are in GEOMETRIC.
PHOTOMETRIC = {
    "colour_jitter": (colour_jitter, "p_colour"),
    "grayscale": (grayscale, "p_grayscale"),
    "negate": (negate, "p_negate"),
    "blur": (gaussian_blur, "p_blur"),
    "pixelize": (pixelize, "p_pixelize"),
    "noise": (gaussian_noise, "p_noise"),
}
MIXING = {"blend": (blend, "p_blend"), "picture_in_picture": (picture_in_picture, "p_pip"), "stack": (stack, "p_stack")}
ALL_AUGMENTATIONS = GEOMETRIC + tuple(PHOTOMETRIC) + ("overlay",) + tuple(MIXING)


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 255.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255.0).round().to(torch.uint8)


@dataclass
class CopyAugment:
    """The full chain: geometry, colour, overlays, other-image edits, blur/pixelize, noise.

    Attributes:
        cfg: probabilities and ranges.
        masks: overlay masks (M, 2, s, s) float on the training device.
        others_cfg: geometry for the "other" images (a plain random crop + flip).
    """

    cfg: AugmentConfig
    masks: torch.Tensor
    others_cfg: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        crop_scale=(0.3, 1.0), p_vflip=0.0, p_rot90=0.0, p_rotate=0.0, p_perspective=0.0, p_pad=0.0))

    def __post_init__(self) -> None:
        self.others_cfg = AugmentConfig(**{**self.others_cfg.__dict__, "out_size": self.cfg.out_size})

    def __call__(self, bank: torch.Tensor, indices: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One augmented view of ``bank[indices]``.

        Args:
            bank: uint8 (N, 3, S, S) source images on the training device.
            indices: (B,) long indices into ``bank``.
            gen: generator on the training device.

        Returns:
            uint8 (B, 3, out, out).
        """
        cfg = self.cfg
        n = indices.shape[0]
        x = apply_geometry(to_float(bank[indices]), gen, cfg)
        for name in ("colour_jitter", "grayscale", "negate"):
            fn, p = PHOTOMETRIC[name]
            x = fn(x, gen, cfg, _bernoulli(gen, n, getattr(cfg, p)))
        x = overlay(x, gen, cfg, _bernoulli(gen, n, cfg.p_overlay), self.masks)
        x = overlay(x, gen, cfg, _bernoulli(gen, n, cfg.p_overlay / 3), self.masks)
        # Other images: random ones from the bank (not the sample itself), lightly cropped.
        other_idx = (indices + torch.randint(1, bank.shape[0], (n,), generator=gen, device=gen.device)) % bank.shape[0] \
            if bank.shape[0] > 1 else indices
        others = apply_geometry(to_float(bank[other_idx]), gen, self.others_cfg)
        for name in ("blend", "picture_in_picture", "stack"):
            fn, p = MIXING[name]
            x = fn(x, gen, cfg, _bernoulli(gen, n, getattr(cfg, p)), others)
        for name in ("blur", "pixelize", "noise"):
            fn, p = PHOTOMETRIC[name]
            x = fn(x, gen, cfg, _bernoulli(gen, n, getattr(cfg, p)))
        return to_uint8(x)


def apply_one(name: str, x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig, *,
              masks: torch.Tensor | None = None, others: torch.Tensor | None = None) -> torch.Tensor:
    """Applies the single augmentation ``name`` to every sample of ``x`` (float (B, 3, H, W), square).

    Geometric components output ``cfg.out_size``; the others keep the size. For tests and inspection.
    """
    n = x.shape[0]
    every = torch.ones(n, dtype=torch.bool, device=x.device)
    if name in GEOMETRIC:
        return apply_geometry(x, gen, cfg, force=(name,))
    if name in PHOTOMETRIC:
        return PHOTOMETRIC[name][0](x, gen, cfg, every)
    if name == "overlay":
        if masks is None:
            raise ValueError("overlay needs masks")
        return overlay(x, gen, cfg, every, masks)
    if name in MIXING:
        if others is None:
            raise ValueError(f"{name} needs other images")
        return MIXING[name][0](x, gen, cfg, every, others)
    raise KeyError(f"unknown augmentation {name!r}; known: {ALL_AUGMENTATIONS}")
