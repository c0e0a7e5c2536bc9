"""Edit handling by layout (issue 18) on a mini-VSC build: views per time window, scored like the ablation.

    python -m benchmarks.layout_eval --dataset DIR [--windows 16 32 0] [--json OUT] [--markdown OUT]

Every query and reference is decoded once at 2 samples/s (the shipped sampling) keeping the
native yuv420p planes of its samples; the layout analysis (``runtime.preprocess.layout``) runs on
each window of ``W`` consecutive samples (``0`` = the whole video), its views are cut from the
native planes and embedded with the shipped ONNX model, all cached per video under
``--work-dir``. Each variant then selects descriptors inside the per-video budget
(``runtime.postprocess.layout_budget.select_by_window``) and is scored exactly like the shipped
default of ``benchmarks.ablation`` (PCA 128 fitted on the training references, score
normalisation against their noise set, near-duplicate pruning at 0.9): descriptor µAP, segment AP,
recall at precision 0.9 per edit type, and the rank of the true reference per edit type. The main rows
use the PCA fitted on the training references (the default before issue 10's pack PCA); ``--pack`` adds
the rows with the pack PCA that is shipped now. The
baseline row (no edit handling) comes from the ablation's cache of the same samples.

"Split by mistake" counts windows split into cells or given a window although no part of the
video's footage under that window carries a stack, picture-in-picture or padding edit
(``dataset.json``; cells cut at a pad's bars are a crop of the picture, not a mistake).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np

from benchmarks.ablation import (
    TRAIN_FPS,
    Variant,
    fit_projection,
    raw_embeddings,
    score_tracks,
    subsample,
)
from benchmarks.layout_truth import (
    RANK_EDITS,
    SPLIT_EDITS,
    layout_truth,
    true_ref_ranks,
)
from runtime.decode.layout_capture import plane_view
from runtime.decode.pyav import _stream_duration
from runtime.infer.ort import OnnxRuntimeBackend
from runtime.io.dataset import video_tasks
from runtime.io.descriptors import VideoDescriptors
from runtime.io.ground_truth import (
    read_descriptor_ground_truth,
)
from runtime.model_manifest import ModelManifest
from runtime.pipeline.extractor import load_manifest, preprocess_config
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.layout_budget import LayoutPostprocessor
from runtime.postprocess.projection import Projection
from runtime.postprocess.score_normalization import load_noise_set
from runtime.preprocess.layout import (
    LayoutSettings,
    analyze_video_layout,
    crop_yuv420p_views,
    plain_decision,
    window_bounds,
)
from runtime.records import VideoEmbeddings, VideoInfo, VideoTask
from runtime.sampling import SamplingPolicy, select_frames

logger = logging.getLogger("benchmarks.layout_eval")

SHIPPED = Variant("pca128 +score norm +2fps budgeted +dedup0.9", pca_dim=128, score_norm=True, fps=2.0, duplicate_similarity=0.9)
CACHE_VERSION = 3  # 2: the C++ analysis rejects static overlays and block lattices; 3: padding bars are cropped


def decode_samples(path: Path, fps: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(intervals, y, u, v) of the 2 samples/s frames of a yuv420p video, native resolution."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = _stream_duration(container, stream)
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = float(stream.time_base)
        first = pts[0]
        selection = select_frames((np.asarray(pts) - first) * base, SamplingPolicy(fps=fps), duration if duration > 0 else None)
        wanted = {int(pts[i]): k for k, i in enumerate(selection.indices)}
        planes: dict[int, tuple[np.ndarray, ...]] = {}
        for frame in container.decode(stream):
            k = wanted.get(int(frame.pts)) if frame.pts is not None else None
            if k is None:
                continue
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            planes[k] = tuple(np.array(plane_view(frame, p)) for p in range(3))
    kept = sorted(planes)
    y, u, v = (np.stack([planes[k][p] for k in kept]) for p in range(3))
    return selection.intervals[kept], y, u, v


def extract_video(task: VideoTask, backend: OnnxRuntimeBackend, preprocess, window_sizes: list[int], settings: LayoutSettings,
                  memo: dict[tuple, np.ndarray] | None = None, known: VideoEmbeddings | None = None) -> dict:
    """Per window size: rows (intervals, window, view, embeddings) and the window decisions.

    ``memo`` maps (sample, (rect, quarter_turns)) to embeddings already made (filled in place);
    ``known``: the video's whole-frame embeddings from the ablation's cache, used when its samples match.
    """
    intervals, y, u, v = decode_samples(task.path)
    height, width = y.shape[1:]
    memo = {} if memo is None else memo
    if known is not None and known.intervals.shape == intervals.shape and np.allclose(known.intervals, intervals, atol=1e-3):
        memo.update(((k, ((0, 0, width, height), 0)), e) for k, e in enumerate(known.embeddings))
    out: dict = {"intervals": intervals}
    analysis_seconds = 0.0
    for size in window_sizes:
        rows_t, rows_w, rows_v, keys, decisions = [], [], [], [], []
        for w, (a, b) in enumerate(window_bounds(len(y), size)):
            start = time.process_time()
            decision = analyze_video_layout(y[a:b], settings) if b - a >= 3 else plain_decision(width, height)
            analysis_seconds += time.process_time() - start
            decisions.append({"samples": [a, b], **decision.to_record()})
            for vi, view in enumerate(decision.views):
                key = (view.rect, view.quarter_turns)
                missing = [k for k in range(a, b) if (k, key) not in memo]
                if missing:
                    images = crop_yuv420p_views(y[missing], u[missing], v[missing], (view,), preprocess)[0]
                    for k, e in zip(missing, backend.infer(np.ascontiguousarray(images))):
                        memo[(k, key)] = e
                for k in range(a, b):
                    rows_t.append(k), rows_w.append(w), rows_v.append(vi), keys.append((k, key))
        out[f"w{size}"] = {
            "sample": np.asarray(rows_t, np.int32), "window": np.asarray(rows_w, np.int32), "view": np.asarray(rows_v, np.int16),
            "embeddings": np.stack([memo[k] for k in keys]), "decisions": decisions}
    whole = ((0, 0, width, height), 0)  # the uncropped frame: the rows without edit handling
    missing = [k for k in range(len(y)) if (k, whole) not in memo]
    if missing:
        images = crop_yuv420p_views(y[missing], u[missing], v[missing], (plain_decision(width, height).views[0],), preprocess)[0]
        memo.update(((k, whole), e) for k, e in zip(missing, backend.infer(np.ascontiguousarray(images))))
    out["raw"] = np.stack([memo[(k, whole)] for k in range(len(y))])
    out["analysis_seconds"] = analysis_seconds
    out["embedded"] = len(memo)
    return out


def _load_memo(path: Path) -> dict[tuple, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {(int(k[0]), ((int(k[1]), int(k[2]), int(k[3]), int(k[4])), int(k[5]))): e for k, e in zip(data["keys"], data["embeddings"])}


def _save_memo(path: Path, memo: dict[tuple, np.ndarray]) -> None:
    keys = np.array([[k, *rect, turns] for k, (rect, turns) in memo], dtype=np.int32).reshape(-1, 6)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, keys=keys, embeddings=np.stack(list(memo.values())))
    tmp.replace(path)


def _memo_of(video: dict) -> dict[tuple, np.ndarray]:
    """The embeddings of a cached video's rows, by (sample, view key)."""
    memo = {}
    for key, rows in video.items():
        if not (key.startswith("w") and isinstance(rows, dict)):
            continue
        for row, (k, w, vi) in enumerate(zip(rows["sample"], rows["window"], rows["view"])):
            view = rows["decisions"][w]["views"][vi]
            memo[(int(k), (tuple(view["rect"]), int(view["quarter_turns"])))] = rows["embeddings"][row]
    return memo


def _save(path: Path, video: dict) -> None:
    arrays = {"intervals": video["intervals"], "raw": video["raw"]}
    meta = {"analysis_seconds": video["analysis_seconds"], "embedded": video["embedded"], "windows": {}}
    for key, value in video.items():
        if key.startswith("w"):
            for name in ("sample", "window", "view", "embeddings"):
                arrays[f"{key}_{name}"] = value[name]
            meta["windows"][key] = value["decisions"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _load(path: Path) -> dict:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        video = {"intervals": data["intervals"], "analysis_seconds": meta["analysis_seconds"], "embedded": meta["embedded"],
                 "raw": data["raw"] if "raw" in data.files else None}
        for key, decisions in meta["windows"].items():
            video[key] = {name: data[f"{key}_{name}"] for name in ("sample", "window", "view", "embeddings")}
            video[key]["decisions"] = decisions
    return video


def layout_embeddings(tasks: list[VideoTask], manifest: ModelManifest, store: Path, window_sizes: list[int], settings: LayoutSettings,
                      known: dict | None = None) -> dict:
    """``extract_video`` for every task, cached per video (resumable; the key covers model, windows and settings)."""
    from tqdm import tqdm

    key = {"version": CACHE_VERSION, "onnx": manifest.onnx_sha256, "windows": window_sizes, "settings": asdict(settings)}
    store.mkdir(parents=True, exist_ok=True)
    key_file = store / "key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) != key:
        for stale in store.glob("*.npz"):
            stale.unlink()
    key_file.write_text(json.dumps(key))
    backend = OnnxRuntimeBackend(manifest.onnx_path)
    preprocess = preprocess_config(manifest)
    out = {}
    memo_dir = store.parent / f"{store.name}-memo"  # embeddings by (sample, view): kept across settings
    memo_dir.mkdir(exist_ok=True)
    with backend:
        for task in tqdm(tasks, desc=f"layout {store.name}", unit="video"):
            path, memo_path = store / f"{task.video_id}.npz", memo_dir / f"{task.video_id}.npz"
            if not path.is_file():
                memo = _load_memo(memo_path)
                try:
                    _save(path, extract_video(task, backend, preprocess, window_sizes, settings, memo, (known or {}).get(task.video_id)))
                except (av.FFmpegError, ValueError, IndexError) as exc:
                    logger.warning("%s failed: %s", task.video_id, exc)
                    continue
                _save_memo(memo_path, memo)
            out[task.video_id] = _load(path)
            if not memo_path.is_file():
                _save_memo(memo_path, _memo_of(out[task.video_id]))
    return out


def layout_descriptors(video_id: str, video: dict, size: int, projection, duration: float, budget: BudgetConfig,
                       whole_in_split: bool = False, spread: str = "even") -> VideoDescriptors:
    """The budgeted descriptors of one video's window-``size`` views, by the shipped ``LayoutPostprocessor``."""
    rows = video[f"w{size}"]
    split = np.any(rows["view"] != 0)
    embeddings = VideoEmbeddings(video_id, video["intervals"][rows["sample"]], rows["embeddings"], VideoInfo("", duration, 0.0, 0, 0, ""),
                                 views=rows["view"] if split else None, windows=rows["window"] if split else None)
    return LayoutPostprocessor(projection, budget, spread=spread, whole_in_split=whole_in_split)(embeddings, duration)


def score(name: str, q: list[VideoDescriptors], r: list[VideoDescriptors], noise_source: list[VideoDescriptors] | None, dataset: Path,
          edits_by_pair: dict, min_similarity: float | None = None) -> dict:
    """The shipped scoring (``benchmarks.ablation.score_tracks``) plus the rank of the true reference per edit type."""
    descriptor, matching, edits, q, r = score_tracks(q, r, dataset, noise_source, SHIPPED.beta, min_similarity)
    ranks = true_ref_ranks(descriptor.candidates, read_descriptor_ground_truth(dataset / "descriptor_ground_truth.csv"))
    rank_first = {}
    for edit in RANK_EDITS:
        pairs = [p for p, e in edits_by_pair.items() if edit in e]
        if pairs:
            rank_first[edit] = {"first": sum(ranks.get(p, 10**6) == 1 for p in pairs), "pairs": len(pairs),
                                "ranks": sorted(ranks.get(p, 10**6) for p in pairs)}
    return {"variant": name, "descriptor_uap": round(descriptor.uap, 4), "segment_ap": round(matching.ap, 4),
            "query_descriptors": sum(len(v) for v in q), "reference_descriptors": sum(len(v) for v in r),
            "edit_recall_at_p90": edits, "edit_types_recalled": sum(1 for k, v in edits.items() if k != "none" and v["recall"] > 0),
            "rank_first": rank_first}


def mistaken_splits(videos: dict, size: int, truth: dict) -> tuple[int, int, list[str]]:
    """(windows split into cells or given a window, of those without a stack/PiP/pad under them, examples)."""
    split = wrong = 0
    examples = []
    for video_id, video in videos.items():
        intervals = video["intervals"]
        for decision in video[f"w{size}"]["decisions"]:
            if decision["kind"] not in ("grid", "window"):
                continue
            split += 1
            a, b = decision["samples"]
            t0, t1 = float(intervals[a, 0]), float(intervals[b - 1, 1])
            under = set().union(*[e for s, e_, e in truth.get(video_id, []) if s < t1 and e_ > t0]) if video_id in truth else set()
            if not under & (SPLIT_EDITS | {"pad"}):  # a padded picture split at its bars is a crop, not a mistake
                wrong += 1
                examples.append(f"{video_id}[{a}:{b}] {decision['kind']}")
    return split, wrong, examples


def to_markdown(rows: list[dict]) -> str:
    lines = ["| variant | µAP | segment AP | edit types > 0 | " + " | ".join(f"{e} first" for e in RANK_EDITS) + " | query / reference descriptors |",
             "|---|---|---|---|" + "---|" * len(RANK_EDITS) + "---|"]
    for row in rows:
        firsts = [f"{row['rank_first'][e]['first']}/{row['rank_first'][e]['pairs']}" if e in row["rank_first"] else "-" for e in RANK_EDITS]
        lines.append(f"| {row['variant']} | {row['descriptor_uap']:.4f} | {row['segment_ap']:.4f} | {row['edit_types_recalled']} | "
                     + " | ".join(firsts) + f" | {row['query_descriptors']} / {row['reference_descriptors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 32, 0], help="window sizes in samples (0 = the whole video)")
    parser.add_argument("--work-dir", type=Path, default=None, help="cache (default DATASET/../.vcd-layout/NAME)")
    parser.add_argument("--ablation-dir", type=Path, default=None, help="the ablation's cache (default DATASET/../.vcd-ablation/NAME)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                        help="the model (int8: the quantised one the CPU runs by default); caches are per model")
    parser.add_argument("--shipped", action="store_true",
                        help="only the rows with the shipped projection and noise set of the model directory (no --pack needed)")
    parser.add_argument("--pack", type=Path, default=None, help="training pack tar: adds rows with issue 10's pack PCA")
    parser.add_argument("--pack-cache", type=Path, default=None, help="cache of the pack embeddings (.npz)")
    parser.add_argument("--pack-only", action="store_true", help="with --pack: only the baseline and the pack rows")
    parser.add_argument("--match-thresholds", type=float, nargs="*", default=[], help="with --pack: matching node thresholds to sweep")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    manifest = load_manifest(args.model_dir, args.precision)
    work = args.work_dir or args.dataset.parent / ".vcd-layout" / args.dataset.name
    ablation = args.ablation_dir or args.dataset.parent / ".vcd-ablation" / args.dataset.name
    query_tasks = video_tasks(args.dataset, "query", subset_csv=args.dataset / "query_subset.csv")
    ref_tasks = video_tasks(args.dataset, "reference")
    train_tasks = video_tasks(args.dataset / "train", "reference")
    durations = {t.video_id: t.duration for t in query_tasks + ref_tasks if t.duration}
    settings = LayoutSettings(max_analysis_frames=10**6)

    train = raw_embeddings(train_tasks, manifest, ablation / "train", fps=TRAIN_FPS)
    started = time.perf_counter()
    def ablation_cache(tasks, split):  # whole-frame embeddings already made by benchmarks.ablation, if any
        return raw_embeddings(tasks, manifest, ablation / split) if (ablation / split / "run.json").is_file() else None

    lay_q = layout_embeddings(query_tasks, manifest, work / "query", args.windows, settings, ablation_cache(query_tasks, "query"))
    lay_r = layout_embeddings(ref_tasks, manifest, work / "reference", args.windows, settings, ablation_cache(ref_tasks, "reference"))
    extraction = time.perf_counter() - started
    if all(v["raw"] is not None for v in {**lay_q, **lay_r}.values()):  # the same samples' uncropped frames
        def as_raw(videos):
            return {k: VideoEmbeddings(k, v["intervals"], v["raw"], VideoInfo("", durations.get(k) or 0.0, 0.0, 0, 0, "")) for k, v in videos.items()}
        base_q, base_r = as_raw(lay_q), as_raw(lay_r)
    else:  # an older cache: the ablation's extraction of the same samples
        base_q = raw_embeddings(query_tasks, manifest, ablation / "query")
        base_r = raw_embeddings(ref_tasks, manifest, ablation / "reference")

    projection = fit_projection(SHIPPED, train, None, {})
    budget = BudgetConfig(duplicate_similarity=SHIPPED.duplicate_similarity)
    noise_source = [VideoDescriptors(v.video_id, v.intervals.astype(np.float32), projection.apply(v.embeddings)) for v in train.values()]
    edits_by_pair = {}
    with (args.dataset / "edits.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            edits_by_pair[(row["query_id"], row["ref_id"])] = set(filter(None, row["edits"].split("|")))
    truth = layout_truth(args.dataset)

    from benchmarks.ablation import _postprocess

    def baseline(videos):
        return [_postprocess(projection, budget, subsample(v, 2.0), durations.get(k)) for k, v in sorted(videos.items())]

    if args.shipped:
        projection = Projection.load(manifest.projection_path)
        noise = load_noise_set(manifest.noise_set_path)
        noise_source = [VideoDescriptors("noise", np.zeros((len(noise), 2), np.float32), noise)]
    rows = [score(f"no edit handling ({'shipped' if args.shipped else 'pca-train'})", baseline(base_q), baseline(base_r), noise_source,
                  args.dataset, edits_by_pair)]
    if args.shipped:
        for size in args.windows:
            q = [layout_descriptors(k, v, size, projection, durations.get(k) or float(v["intervals"][-1, 1]), budget) for k, v in sorted(lay_q.items())]
            r = [layout_descriptors(k, v, size, projection, durations.get(k) or float(v["intervals"][-1, 1]), budget) for k, v in sorted(lay_r.items())]
            rows.append(score(f"shipped, layout views, window {size}, parts replace the whole", q, r, noise_source, args.dataset, edits_by_pair))
            split, wrong, examples = mistaken_splits({**lay_q, **lay_r}, size, truth)
            rows[-1]["splits"], rows[-1]["mistaken_splits"], rows[-1]["mistaken_examples"] = split, wrong, examples[:20]
            print(f"window {size}: {split} windows split, {wrong} without a stack/PiP/pad under them: {examples[:10]}", flush=True)
    for size in ([] if args.pack_only or args.shipped else args.windows):
        def views(videos, whole=False, spread="even", size=size):
            return [layout_descriptors(k, v, size, projection, durations.get(k) or float(v["intervals"][-1, 1]), budget, whole, spread)
                    for k, v in sorted(videos.items())]
        label = f"window {size}" if size else "whole video"
        for name, whole, spread, both in ((f"{label}, parts replace the whole", False, "even", True), (label, True, "even", True),
                                          (f"{label}, parts replace the whole, content-change picks", False, "change", True),
                                          (f"{label}, parts replace the whole, queries only", False, "even", False)):
            refs = views(lay_r, whole, spread) if both else baseline(base_r)
            rows.append(score(f"layout views, {name}", views(lay_q, whole, spread), refs, noise_source, args.dataset, edits_by_pair))
        split, wrong, examples = mistaken_splits({**lay_q, **lay_r}, size, truth)
        for row in rows[-4:]:
            row["splits"], row["mistaken_splits"], row["mistaken_examples"] = split, wrong, examples[:20]
        print(f"window {size}: {split} windows split, {wrong} without a stack/PiP/pad under them: {examples[:10]}", flush=True)
    if args.pack is not None and not args.shipped:  # issue 10's training-pack PCA, with and without edit handling
        from onnx_export.fit_postprocessing import DEFAULT_COPIES, pack_embeddings

        pack = pack_embeddings(args.pack, manifest, DEFAULT_COPIES, seed=0, cache=args.pack_cache)
        projection = fit_projection(Variant("pca-pack128", projection="pca-pack", pca_dim=128), train, pack, {})
        noise_source = [VideoDescriptors("pack", np.zeros((len(pack["originals"]), 2), np.float32), projection.apply(pack["originals"]))]
        rows.append(score("pca-pack128, no edit handling", baseline(base_q), baseline(base_r), noise_source, args.dataset, edits_by_pair))
        for t in args.match_thresholds:
            rows.append(score(f"pca-pack128, no edit handling, match threshold {t}", baseline(base_q), baseline(base_r), noise_source,
                              args.dataset, edits_by_pair, t))
        raw = fit_projection(Variant("raw GeM", projection="none"), train, pack, {})
        rows.append(score("raw GeM (L2 only, no score normalisation), no edit handling",
                          [_postprocess(raw, budget, v, durations.get(k)) for k, v in sorted(base_q.items())],
                          [_postprocess(raw, budget, v, durations.get(k)) for k, v in sorted(base_r.items())], None, args.dataset, edits_by_pair))
        for size in args.windows:
            q = [layout_descriptors(k, v, size, projection, durations.get(k) or float(v["intervals"][-1, 1]), budget) for k, v in sorted(lay_q.items())]
            r = [layout_descriptors(k, v, size, projection, durations.get(k) or float(v["intervals"][-1, 1]), budget) for k, v in sorted(lay_r.items())]
            rows.append(score(f"pca-pack128, layout views, window {size}, parts replace the whole", q, r, noise_source, args.dataset, edits_by_pair))
    for row in rows:
        print(f"{row['variant']:<60} µAP {row['descriptor_uap']:.4f}  segment AP {row['segment_ap']:.4f}  "
              f"types {row['edit_types_recalled']}  " + " ".join(f"{e} {v['first']}/{v['pairs']}" for e, v in row["rank_first"].items()), flush=True)
    analysis = sum(v["analysis_seconds"] for v in {**lay_q, **lay_r}.values())
    samples = sum(len(v["intervals"]) for v in {**lay_q, **lay_r}.values())
    embedded = sum(v["embedded"] for v in {**lay_q, **lay_r}.values())
    summary = {"extraction_seconds_this_run": round(extraction, 1), "analysis_cpu_seconds": round(analysis, 2),
               "samples": samples, "images_embedded": embedded, "window_sizes": args.windows}
    print(json.dumps(summary))
    table = to_markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=list))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
