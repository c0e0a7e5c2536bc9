"""Ablation of the steps around the model on a mini-VSC dataset: which postprocessing to ship.

    python -m benchmarks.ablation --dataset DIR [--train DIR/train] [--json OUT] [--markdown OUT]

Raw model embeddings are extracted once at 2 samples/s (cached per video under
``--work-dir``) for the queries, references and training references; every variant then
re-runs only the cheap steps (1 fps subsampling or budgeted oversampling, PCA/whitening
fitted on the training references, near-duplicate pruning, score normalisation against the
training noise set) and is scored with the official-equivalent metrics.
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
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.postprocessor import Postprocessor
from runtime.postprocess.projection import Projection
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


def raw_embeddings(tasks: list[VideoTask], manifest: ModelManifest, store_dir: Path, fps: float = RAW_FPS) -> dict[str, VideoEmbeddings]:
    """Model embeddings at ``fps`` per video, cached (resumable) as 1280-d 'descriptors'."""
    from tqdm import tqdm

    store = ResultStore(store_dir, {"onnx_sha256": manifest.onnx_sha256, "raw_fps": fps, "preprocess": asdict(preprocess_config(manifest))})
    todo = [t for t in tasks if not store.is_done(t.video_id)]
    if todo:
        pipeline = build_host_pipeline(PyAVDecoder(), OnnxRuntimeBackend(manifest.onnx_path), SamplingPolicy(fps=fps), preprocess_config(manifest))
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


def run_variant(variant: Variant, queries: dict, refs: dict, train: dict, dataset: Path, durations: dict) -> dict:
    start = time.perf_counter()
    train_features = np.concatenate([v.embeddings for v in train.values()])
    projection = Projection.fit(train_features, dim=variant.pca_dim, whiten=variant.whiten, source="ablation")
    post = Postprocessor(projection, BudgetConfig(duplicate_similarity=variant.duplicate_similarity))
    q = [post(subsample(v, variant.fps), durations.get(k)) for k, v in sorted(queries.items())]
    r = [post(subsample(v, variant.fps), durations.get(k)) for k, v in sorted(refs.items())]
    normalization = None
    if variant.score_norm:
        normalization = ScoreNormalization()
        noise = fit_noise_set([VideoDescriptors(v.video_id, v.intervals.astype(np.float32), projection.apply(v.embeddings))
                               for v in train.values()])
        q, r = normalize_queries(q, noise, normalization), normalize_references(r, normalization)
    gt_pairs = read_descriptor_ground_truth(dataset / "descriptor_ground_truth.csv")
    descriptor = evaluate_descriptor_track(q, r, gt_pairs)
    matching_config = MatchingConfig.for_descriptors(normalization)
    if variant.min_similarity is not None:
        matching_config = MatchingConfig(normalization, LocalizationConfig(min_similarity=variant.min_similarity))
    matches = find_matches(q, r, config=matching_config, already_normalized=True)
    matching = evaluate_matching_track(matches, read_matching_ground_truth(dataset / "matching_ground_truth.csv"))
    return {
        "variant": variant.name,
        "settings": asdict(variant),
        "descriptor_uap": round(descriptor.uap, 4),
        "descriptor_recall": round(descriptor.recall, 4),
        "segment_ap": round(matching.ap, 4),
        "query_descriptors": sum(len(v) for v in q),
        "reference_descriptors": sum(len(v) for v in r),
        "budget": int(sum(np.ceil(durations[k]) for k in queries if k in durations)),
        "edit_recall_at_p90": edit_recall(dataset, descriptor.candidates, gt_pairs, PRECISION_FOR_EDIT_RECALL),
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
                  "| variant | " + " | ".join(edits) + " |", "|---|" + "---|" * len(edits)]
        for row in rows:
            cells = [f"{row['edit_recall_at_p90'].get(e, {}).get('recall', float('nan')):.2f}" for e in edits]
            lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
        counts = [str(rows[0]["edit_recall_at_p90"].get(e, {}).get("pairs", 0)) for e in edits]
        lines.append("| (pairs) | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--train", type=Path, default=None, help="training split (default DATASET/train)")
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
    queries = raw_embeddings(query_tasks, manifest, work / "query")
    refs = raw_embeddings(ref_tasks, manifest, work / "reference")
    train = raw_embeddings(train_tasks, manifest, work / "train", fps=TRAIN_FPS)
    rows = []
    for variant in VARIANTS:
        rows.append(run_variant(variant, queries, refs, train, args.dataset, durations))
        print(f"{variant.name:<48} µAP {rows[-1]['descriptor_uap']:.4f}  segment AP {rows[-1]['segment_ap']:.4f}", flush=True)
    table = to_markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
