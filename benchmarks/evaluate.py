"""Evaluate the pipeline on a mini-VSC dataset (or any directory in the challenge layout).

    python -m benchmarks.evaluate --dataset DIR [--json OUT] [--plot OUT.png] [extraction options]

Extracts query and reference descriptors (cached per setting under ``--work-dir``), then
prints the descriptor-track µAP (official semantics), the matching-track segment AP where
a matching ground truth exists, and the recall per edit type; saves a precision-recall plot.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from runtime.cli import run_split
from runtime.evaluation.descriptor_track import evaluate_descriptor_track
from runtime.evaluation.matching_track import evaluate_matching_track
from runtime.io.dataset import video_tasks
from runtime.io.descriptors import VideoDescriptors
from runtime.io.ground_truth import (
    read_descriptor_ground_truth,
    read_matching_ground_truth,
)
from runtime.io.matches import write_matches_csv
from runtime.io.results import ResultStore
from runtime.matching.localization import LocalizationConfig
from runtime.matching.matcher import MatchingConfig, find_matches, prepare_for_search
from runtime.pipeline.extractor import Extractor, ExtractorConfig, build_extractor
from runtime.postprocess.score_normalization import ScoreNormalization, load_noise_set

logger = logging.getLogger("benchmarks.evaluate")

PRECISION_FOR_EDIT_RECALL = 0.9


def extract(dataset: Path, extractor: Extractor, work_dir: Path, progress: bool) -> tuple[list[VideoDescriptors], list[VideoDescriptors], dict]:
    """Query (subset) and reference descriptors plus timing facts."""
    subset = dataset / "query_subset.csv"
    query_tasks = video_tasks(dataset, "query", subset_csv=subset if subset.is_file() else None)
    ref_tasks = video_tasks(dataset, "reference")
    key = hashlib.sha256(json.dumps(extractor.fingerprint(), sort_keys=True).encode()).hexdigest()[:12]
    out = work_dir / key
    q_report, queries = run_split(query_tasks, extractor, out / "query_descriptors.npz", out, "query", progress)
    r_report, refs = run_split(ref_tasks, extractor, out / "reference_descriptors.npz", out, "reference", progress)
    layouts = {}
    for split, tasks in (("query", query_tasks), ("reference", ref_tasks)):
        store = ResultStore(out / split, extractor.fingerprint())
        layouts.update({t.video_id: record for t in tasks if store.is_done(t.video_id) and (record := store.layout(t.video_id)) is not None})
    facts = {
        "queries": len(queries), "references": len(refs),
        "query_descriptors": q_report.descriptors, "reference_descriptors": r_report.descriptors,
        "failures": [asdict(f) for f in q_report.failures + r_report.failures],
        "query_seconds_per_video_p50": float(np.median(q_report.per_video_seconds)) if q_report.per_video_seconds else None,
        "frames_sampled": q_report.frames_sampled + r_report.frames_sampled,  # this run's (0 when all were cached)
        "frames_inferred": q_report.frames_inferred + r_report.frames_inferred,
        "layouts": layouts,
    }
    return queries, refs, facts


def layout_windows(dataset: Path, layouts: dict[str, dict]) -> dict:
    """Windows by decision kind with ``--layout-views``, and those split (cells, a window) or turned with no
    layout edit (stack, picture-in-picture, padding, rotate90) under them in ``dataset.json``: plain footage; and
    those flipped with no vertical flip under them."""
    from benchmarks.layout_truth import LAYOUT_EDITS, layout_truth

    plan = dataset / "dataset.json"
    truth = layout_truth(dataset) if plan.is_file() else {}
    kinds: dict[str, int] = defaultdict(int)
    mistaken = []
    for video_id, record in sorted(layouts.items()):
        for window in record.get("windows", []):
            kinds[window["kind"]] += 1
            if window["kind"] not in ("grid", "window", "turned", "flipped") or not window.get("times"):
                continue
            t0, t1 = window["times"]
            under = set().union(*[names for s, e, names in truth.get(video_id, []) if s < t1 and e > t0])
            if not under & ({"vflip"} if window["kind"] == "flipped" else LAYOUT_EDITS):  # plain footage (upright, for a flip)
                mistaken.append(f"{video_id}[{window['samples'][0]}:{window['samples'][1]}] {window['kind']}")
    return {"windows_by_kind": dict(sorted(kinds.items())), "mistaken": mistaken}


def rank_first(dataset: Path, candidates, gt_pairs) -> dict[str, dict]:
    """Per layout edit type (``benchmarks.layout_eval.RANK_EDITS``): copied pairs whose reference ranks first for its query."""
    from benchmarks.layout_truth import RANK_EDITS, true_ref_ranks

    edits_file = dataset / "edits.csv"
    if not edits_file.is_file():
        return {}
    ranks = true_ref_ranks(candidates, gt_pairs)
    with edits_file.open(newline="") as f:
        edits = {(row["query_id"], row["ref_id"]): set(row["edits"].split("|")) for row in csv.DictReader(f)}
    out = {}
    for edit in RANK_EDITS:
        pairs = sorted(p for p, names in edits.items() if edit in names)
        if pairs:
            out[edit] = {"first": sum(ranks.get(p, 10**6) == 1 for p in pairs), "pairs": len(pairs),
                         "not_first": {f"{q}/{r}": ranks.get((q, r)) for q, r in pairs if ranks.get((q, r), 10**6) != 1}}
    return out


def edit_recall(dataset: Path, candidates, gt_pairs, precision_level: float) -> dict[str, dict[str, float]]:
    """Recall per edit type at the global score threshold where precision is still >= ``precision_level``."""
    edits_file = dataset / "edits.csv"
    if not edits_file.is_file():
        return {}
    gt = set(gt_pairs)
    scores = np.array([c.score for c in candidates])
    labels = np.array([(c.query_id, c.ref_id) in gt for c in candidates])
    order = np.argsort(-scores, kind="stable")
    precision = np.cumsum(labels[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= precision_level)
    cut = ok[-1] + 1 if len(ok) else 0
    found = {(candidates[i].query_id, candidates[i].ref_id) for i in order[:cut] if labels[i]}
    per_edit: dict[str, list[bool]] = defaultdict(list)
    with edits_file.open(newline="") as f:
        for row in csv.DictReader(f):
            pair = (row["query_id"], row["ref_id"])
            for name in [n for n in row["edits"].split("|") if n] or ["none"]:
                per_edit[name].append(pair in found)
    return {name: {"recall": float(np.mean(v)), "pairs": len(v)} for name, v in sorted(per_edit.items())}


def plot_precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for label, (recall, precision) in curves.items():
        ax.step(np.concatenate([[0], recall]), np.concatenate([[1], precision]), where="post", label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def evaluate(args: argparse.Namespace) -> dict:
    dataset: Path = args.dataset
    # Descriptors are cached without the score-normalisation dimension; it is applied here (cheap).
    config = replace(ExtractorConfig.from_args(args), score_normalization=False)
    extractor = build_extractor(config)
    start = time.perf_counter()
    queries, refs, facts = extract(dataset, extractor, args.work_dir or dataset.parent / ".vcd-eval" / dataset.name, not args.no_progress)
    extract_seconds = time.perf_counter() - start
    noise = None
    normalization = None
    if args.score_normalization and extractor.manifest.noise_set_path is not None:
        noise = load_noise_set(extractor.manifest.noise_set_path)
        normalization = ScoreNormalization(beta=args.beta, k=args.noise_k, aggregation=args.noise_aggregation)
    search_queries, search_refs = prepare_for_search(queries, refs, noise, normalization)
    gt_pairs = read_descriptor_ground_truth(dataset / "descriptor_ground_truth.csv")
    descriptor = evaluate_descriptor_track(search_queries, search_refs, gt_pairs)
    result: dict = {
        "dataset": str(dataset),
        "extractor": extractor.describe(),
        "settings": {**asdict(config), "model_dir": str(config.model_dir), "score_normalization": asdict(normalization) if normalization else None},
        "extract_seconds": round(extract_seconds, 2),
        **facts,
        "descriptor_uap": descriptor.uap,
        "descriptor_recall": descriptor.recall,
        "ground_truth_pairs": descriptor.num_ground_truth_pairs,
        "edit_recall_at_p90": edit_recall(dataset, descriptor.candidates, gt_pairs, PRECISION_FOR_EDIT_RECALL),
        "rank_first": rank_first(dataset, descriptor.candidates, gt_pairs),
    }
    layouts = result.pop("layouts")
    if layouts:
        result["layout_windows"] = layout_windows(dataset, layouts)
    curves = {f"descriptor µAP={descriptor.uap:.3f}": (descriptor.pr_curve.recalls, descriptor.pr_curve.precisions)}
    matching_gt_file = dataset / "matching_ground_truth.csv"
    if matching_gt_file.is_file() and not args.no_matching:
        matching_config = MatchingConfig.for_descriptors(normalization)
        if args.min_similarity is not None:
            matching_config = replace(matching_config, localization=LocalizationConfig(min_similarity=args.min_similarity))
        matches = find_matches(search_queries, search_refs, config=matching_config, already_normalized=True)
        matching = evaluate_matching_track(matches, read_matching_ground_truth(matching_gt_file))
        result["segment_ap"] = matching.ap
        result["matches"] = len(matches)
        if args.matches_csv:
            write_matches_csv(matches, args.matches_csv)
        curves[f"segment AP={matching.ap:.3f}"] = (np.asarray(matching.recalls), np.asarray(matching.precisions))
    if args.plot:
        plot_precision_recall(curves, args.plot, f"{dataset.name}: {len(queries)} queries x {len(refs)} refs")
        result["plot"] = str(args.plot)
    return result


def _print(result: dict) -> None:
    print(f"dataset: {result['dataset']}  ({result['queries']} queries, {result['references']} references)")
    print(f"extractor: {result['extractor']}  ({result['extract_seconds']} s)")
    print(f"score normalisation (applied at evaluation): {result['settings']['score_normalization']}")
    print(f"descriptor track µAP: {result['descriptor_uap']:.4f}  (recall {result['descriptor_recall']:.3f} of {result['ground_truth_pairs']} pairs)")
    if "segment_ap" in result:
        print(f"matching track segment AP: {result['segment_ap']:.4f}  ({result['matches']} predicted segments)")
    if result["edit_recall_at_p90"]:
        print("recall per edit type at precision >= 0.9:")
        for name, v in result["edit_recall_at_p90"].items():
            print(f"  {name:<16} {v['recall']:.2f}  ({v['pairs']} pairs)")
    if result["rank_first"]:
        print("true reference ranked first: " + ", ".join(f"{k} {v['first']}/{v['pairs']}" for k, v in result["rank_first"].items()))
    if "layout_windows" in result:
        print(f"layout windows: {result['layout_windows']['windows_by_kind']}; with no such edit under them: {result['layout_windows']['mistaken']}")
    if result["failures"]:
        print(f"failed videos: {[f['video_id'] for f in result['failures']]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="directory in the challenge layout with ground truth CSVs")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="precision-recall plot (PNG)")
    parser.add_argument("--matches-csv", type=Path, default=None, help="write the predicted matches here")
    parser.add_argument("--work-dir", type=Path, default=None, help="descriptor cache (default: next to the dataset)")
    parser.add_argument("--beta", type=float, default=ScoreNormalization().beta)
    parser.add_argument("--noise-k", type=int, default=ScoreNormalization().k)
    parser.add_argument("--noise-aggregation", choices=["mean", "max"], default=ScoreNormalization().aggregation)
    parser.add_argument("--min-similarity", type=float, default=None, help="localisation node threshold")
    parser.add_argument("--no-matching", action="store_true", help="skip the matching track")
    parser.add_argument("--no-progress", action="store_true")
    ExtractorConfig.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = evaluate(args)
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
