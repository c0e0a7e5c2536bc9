"""Simulate pre-selection before inference (Note [Pre-selection] in runtime/preprocess/preselect.py) on the ablation cache.

    nice -n 10 python -m benchmarks.preselect_eval --dataset /work/data/mini-vsc-full [--json OUT]

One decode pass (PyAV, the ablation's ``SamplingPolicy(fps=2)`` and preprocessing) stores a 32x32
area-averaged thumbnail of every sample's model input, cached per video under ``--cache``; the
sample intervals must equal those of the cached raw embeddings exactly (the same frames). Each
setting then picks the frames ``preselect`` would send to the model, keeps only their cached
embeddings, and runs the shipped postprocessing and evaluation through ``benchmarks.ablation``'s
``run_variant`` (variant "pca128 +score norm +2fps budgeted +dedup0.9", the shipped default). The
first row (no pre-selection) must reproduce the shipped numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from benchmarks.ablation import (
    RAW_FPS,
    TRAIN_FPS,
    VARIANTS,
    fit_projection,
    raw_embeddings,
    run_variant,
)
from runtime.decode.base import DecodeError
from runtime.decode.pyav import PyAVDecoder
from runtime.io.dataset import video_tasks
from runtime.model_manifest import ModelManifest, default_model_dir
from runtime.pipeline.extractor import preprocess_config
from runtime.postprocess.budget import BudgetConfig, select_samples
from runtime.preprocess.preselect import PreselectConfig, area_downsample, preselect
from runtime.records import VideoEmbeddings, VideoTask
from runtime.sampling import SamplingPolicy

logger = logging.getLogger("benchmarks.preselect_eval")

SHIPPED_VARIANT = "pca128 +score norm +2fps budgeted +dedup0.9"
THUMBNAIL = 32  # cached thumbnail side: every signature grid that divides it (8, 16, 32) is exact up to rounding
CACHE_VERSION = 1


def thumbnails(tasks: list[VideoTask], preprocess, cache_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per video: ``intervals`` (K, 2), ``thumbs`` (K, 3, 32, 32) float32 and ``duration`` (decoded), cached."""
    from tqdm import tqdm

    cache_dir.mkdir(parents=True, exist_ok=True)
    key = {"version": CACHE_VERSION, "fps": RAW_FPS, "preprocess": asdict(preprocess), "thumbnail": THUMBNAIL}
    key_file = cache_dir / "key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) != key:
        raise ValueError(f"{cache_dir} holds thumbnails of other settings ({key_file}); use another --cache")
    key_file.write_text(json.dumps(key, indent=1))
    decoder, policy = PyAVDecoder(), SamplingPolicy(fps=RAW_FPS)  # as benchmarks.ablation.raw_embeddings
    out = {}
    for task in tqdm(tasks, desc="thumbnails", unit="video"):
        path = cache_dir / f"{task.video_id}.npz"
        if not path.is_file():
            try:
                decoded = decoder.decode(task.path, policy, preprocess)
            except DecodeError as exc:
                logger.warning("%s: %s", task.video_id, exc)
                continue
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, intervals=decoded.intervals, thumbs=area_downsample(decoded.images, THUMBNAIL),
                     duration=np.float64(decoded.info.duration))
            tmp.replace(path)
        with np.load(path) as z:
            out[task.video_id] = {k: z[k] for k in ("intervals", "thumbs", "duration")}
    return out


def _check_cache_key(store_dir: Path, manifest: ModelManifest, fps: float) -> None:
    """Refuse to open an embedding cache of other settings: ``ResultStore`` would clear it."""
    expected = {"onnx_sha256": manifest.onnx_sha256, "raw_fps": fps, "preprocess": asdict(preprocess_config(manifest)), "store_format": 2}
    stored = json.loads((store_dir / "run.json").read_text())
    if stored != json.loads(json.dumps(expected)):
        raise ValueError(f"{store_dir}: cached embeddings of other settings ({stored}); expected {expected}")


def _subset(video: VideoEmbeddings, keep: np.ndarray) -> VideoEmbeddings:
    return VideoEmbeddings(video.video_id, video.intervals[keep], video.embeddings[keep], video.info)


def settings() -> list[tuple[str, PreselectConfig | None]]:
    """The rows: no pre-selection, then margins x signatures x pruning thresholds."""
    rows: list[tuple[str, PreselectConfig | None]] = [("none (every sample inferred)", None)]
    for margin in (0.0, 0.25, 0.5, 0.75, 1.0):
        for kind, grid in (("rgb", 16), ("luma", 16), ("rgb", 8)):
            for dup in (0.95, 0.98, 1.0):
                config = PreselectConfig(margin=margin, duplicate_similarity=dup, grid=grid, kind=kind)
                rows.append((f"margin {margin} {kind}{grid} dup{dup}", config))
    return rows


def _uniform(count: int, limit: int) -> np.ndarray:
    """The control: ``limit`` evenly spaced samples (no content signal)."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, limit)).astype(np.int64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, default=None, help="the ablation cache (default: benchmarks.ablation's)")
    parser.add_argument("--cache", type=Path, default=Path("/work/data/issue13/preselect"), help="thumbnail cache")
    parser.add_argument("--decode-only", action="store_true", help="fill the thumbnail cache and stop")
    parser.add_argument("--only", nargs="*", default=None, help="run only the settings with these names")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    manifest = ModelManifest.load(default_model_dir())
    work = args.work_dir or args.dataset.parent / ".vcd-ablation" / args.dataset.name
    subset = args.dataset / "query_subset.csv"
    query_tasks = video_tasks(args.dataset, "query", subset_csv=subset if subset.is_file() else None)
    ref_tasks = video_tasks(args.dataset, "reference")
    thumbs = thumbnails(ref_tasks + query_tasks, preprocess_config(manifest), args.cache)
    if args.decode_only:
        return 0
    for split, fps in (("query", RAW_FPS), ("reference", RAW_FPS), ("train", TRAIN_FPS)):
        _check_cache_key(work / split, manifest, fps)
    queries = raw_embeddings(query_tasks, manifest, work / "query")
    refs = raw_embeddings(ref_tasks, manifest, work / "reference")
    train = raw_embeddings(video_tasks(args.dataset / "train", "reference"), manifest, work / "train", fps=TRAIN_FPS)
    for video in [*queries.values(), *refs.values()]:  # the same frames: identical sample times
        cached = thumbs[video.video_id]["intervals"].astype(np.float32).astype(np.float64)
        if cached.shape != video.intervals.shape or not np.array_equal(cached, video.intervals):
            raise ValueError(f"{video.video_id}: the decoded sample intervals differ from the cached embeddings'")
    durations = {t.video_id: t.duration for t in query_tasks + ref_tasks if t.duration}
    variant = next(v for v in VARIANTS if v.name == SHIPPED_VARIANT)
    total = sum(len(v.intervals) for v in [*queries.values(), *refs.values()])
    rows, cache = [], {}
    # A less noisy measure than µAP on 58 pairs: how many of the frames the budget keeps without
    # pre-selection were still sent to the model (the shipped projection and budget, as run_variant).
    projection, budget = fit_projection(variant, train, None, cache), BudgetConfig(duplicate_similarity=variant.duplicate_similarity)
    budget_picks = {v.video_id: select_samples(projection.apply(v.embeddings), durations.get(v.video_id) or float(v.intervals[-1, 1]), budget)
                    for v in [*queries.values(), *refs.values()]}
    candidates = settings() + [(f"control: uniform, margin {m}", m) for m in (0.0, 0.25, 0.5)]
    for name, config in candidates:
        if args.only is not None and name not in args.only:
            continue
        start = time.perf_counter()
        picked, picks_kept = {}, 0
        for video in [*queries.values(), *refs.values()]:
            t = thumbs[video.video_id]
            if config is None:
                keep = np.arange(len(video.intervals))
            elif isinstance(config, float):
                limit = max(1, PreselectConfig(margin=config).limit(float(t["duration"]) or float(t["intervals"][-1, 1])))
                keep = _uniform(len(video.intervals), limit)
            else:
                keep = preselect(t["thumbs"], t["intervals"], float(t["duration"]), config)
            picked[video.video_id] = _subset(video, keep)
            picks_kept += np.isin(budget_picks[video.video_id], keep).sum()
        select_seconds = time.perf_counter() - start
        inferred = sum(len(v.intervals) for v in picked.values())
        row = run_variant(replace(variant, name=name), {k: picked[k] for k in queries}, {k: picked[k] for k in refs},
                          train, args.dataset, durations, cache=cache)
        row.update(inferred_fraction=round(inferred / total, 4), inferred=inferred, sampled=total,
                   budget_picks_kept=round(float(picks_kept) / sum(len(b) for b in budget_picks.values()), 4),
                   preselect=asdict(config) if isinstance(config, PreselectConfig) else config,
                   select_seconds=round(select_seconds, 2))
        rows.append(row)
        print(f"{name:<36} µAP {row['descriptor_uap']:.4f}  segment AP {row['segment_ap']:.4f}  "
              f"edit types {row['edit_types_recalled']}  inferred {row['inferred_fraction']:.3f}  "
              f"budget picks kept {row['budget_picks_kept']:.3f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
