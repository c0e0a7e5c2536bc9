"""Is a window of a video turned by 90 degrees? An orientation probe on the model's own embeddings (issue 18).

    python -m benchmarks.orientation_eval --dataset DIR [--probe FILE | --train-dataset DIR ...] [--json OUT]

mini-VSC's ``rotate90`` copies are turned and then resized back to the video's frame size, so no
geometry (padding, aspect) says "turned". But the model input is square: the turned copy's model
input is the reference's model input turned by a quarter, so embedding the input turned back
recovers the reference's embedding exactly. The question is only *when* to do it.

The probe (``runtime.postprocess.orientation``) is a logistic regression on L2-normalised
embeddings: a shipped one (``--probe``) or one fitted here on the builds' training footage
(``DIR/train/reference``; never the queries or references scored) in its four orientations. Every
window of ``--window`` samples is decided as the runtime decides it (Note [Orientation decision]),
for each screen logit and margin given; the report counts the windows called turned that lie over
a ``rotate90`` copy and those that do not (queries and references), and the copied pairs with a
turned window; with ``--flip-margins`` (or a probe with a ``flip_margin``), the windows called upside
down over a ``vflip`` copy and those that are not. Embeddings of every sample in four orientations are cached under ``--work-dir``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.layout_eval import decode_samples
from benchmarks.layout_truth import layout_truth
from onnx_export import fit_orientation
from runtime.infer.ort import OnnxRuntimeBackend
from runtime.io.dataset import video_tasks
from runtime.model_manifest import ModelManifest
from runtime.pipeline.extractor import load_manifest, preprocess_config
from runtime.postprocess.orientation import (
    QUARTER_TURNS,
    OrientationProbe,
    probe_indices,
)
from runtime.postprocess.projection import l2_normalize
from runtime.preprocess.layout import (
    crop_yuv420p_views,
    plain_decision,
    turn_images,
    window_bounds,
)
from runtime.records import VideoTask

logger = logging.getLogger("benchmarks.orientation_eval")

TURNS = (0, 1, 3, 2)  # quarter turns (counter-clockwise) embedded per sample


def turned_embeddings(task: VideoTask, backend: OnnxRuntimeBackend, preprocess, turns=TURNS) -> tuple[np.ndarray, np.ndarray]:
    """(intervals, embeddings (len(turns), N, D)) of the 2 samples/s whole-frame inputs turned by each of ``turns``."""
    intervals, y, u, v = decode_samples(task.path)
    height, width = y.shape[1:]
    images = crop_yuv420p_views(y, u, v, (plain_decision(width, height).views[0],), preprocess)[0]
    out = [backend.infer(turn_images(images, k)) for k in turns]
    return intervals, np.stack(out)


def cached_embeddings(tasks: list[VideoTask], backend, preprocess, store: Path, turns=TURNS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from tqdm import tqdm

    store.mkdir(parents=True, exist_ok=True)
    out = {}
    for task in tqdm(tasks, desc=f"orientation {store.name}", unit="video"):
        path = store / f"{task.video_id}.npz"
        if not path.is_file():
            intervals, embeddings = turned_embeddings(task, backend, preprocess, turns)
            np.savez(path, intervals=intervals, embeddings=embeddings.astype(np.float16))
        with np.load(path) as data:
            out[task.video_id] = (data["intervals"], data["embeddings"].astype(np.float32))
    return out


def fit_probe(train: dict[str, tuple[np.ndarray, np.ndarray]], c: float) -> OrientationProbe:
    """The probe fitted on every training sample in every cached orientation (as ``onnx_export.fit_orientation``)."""
    features = np.concatenate([l2_normalize(e.reshape(-1, e.shape[-1])) for _, e in train.values()])
    labels = np.concatenate([np.repeat((np.asarray(TURNS) == 0).astype(int), e.shape[1]) for _, e in train.values()])
    return fit_orientation.fit_probe(features, labels, c, fit_orientation.DEFAULT_SCREEN_LOGIT, fit_orientation.DEFAULT_MARGIN, ())


def window_decisions(probe: OrientationProbe, embeddings: np.ndarray, size: int, screen_logit: float, margin: float,
                     flip_margin: float | None) -> list[dict]:
    """The runtime's decision (Note [Orientation decision]) for every window of one video's cached embeddings."""
    logits = probe.logits(embeddings.reshape(-1, embeddings.shape[-1])).reshape(embeddings.shape[:2])
    decider = replace(probe, screen_logit=screen_logit, margin=margin, flip_margin=flip_margin)
    out = []
    for a, b in window_bounds(embeddings.shape[1], size):
        probed = not decider.passes_screen(logits[0, a:b])
        turns, gain = 0, float("nan")
        if probed:
            idx = a + probe_indices(b - a)
            turns, gain = decider.decide(logits[0, idx], {k: logits[TURNS.index(k), idx] for k in QUARTER_TURNS})
        out.append({"samples": (a, b), "probed": probed, "turns": turns, "gain": gain, "upright": float(logits[0, a:b].mean())})
    return out


def _cover(parts: list, span: tuple[float, float], edit: str) -> float:
    """Share of ``span`` (seconds) under query parts carrying ``edit``."""
    t0, t1 = span
    return round(sum(max(0.0, min(e, t1) - max(s, t0)) for s, e, names in parts if edit in names) / max(t1 - t0, 1e-6), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--train-dataset", type=Path, nargs="*", default=[], help="more builds whose train split trains the probe")
    parser.add_argument("--probe", type=Path, default=None, help="a fitted probe (onnx_export.fit_orientation) instead of fitting one here")
    parser.add_argument("--work-dir", type=Path, default=None, help="cache (default DATASET/../.vcd-orientation)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    parser.add_argument("--window", type=int, default=12)
    parser.add_argument("--c", type=float, default=1.0)
    parser.add_argument("--screen-logits", type=float, nargs="+", default=[fit_orientation.DEFAULT_SCREEN_LOGIT])
    parser.add_argument("--margins", type=float, nargs="+", default=[fit_orientation.DEFAULT_MARGIN])
    parser.add_argument("--flip-margins", type=float, nargs="+", default=None,
                        help="also call windows upside down at these margins (default: the probe's own setting)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    manifest: ModelManifest = load_manifest(args.model_dir, args.precision)
    work = args.work_dir or args.dataset.parent / ".vcd-orientation"
    backend, preprocess = OnnxRuntimeBackend(manifest.onnx_path), preprocess_config(manifest)
    train: dict = {}
    with backend:
        for build in ([] if args.probe else [args.dataset, *args.train_dataset]):
            tasks = video_tasks(build / "train", "reference")
            train.update({f"{build.name}/{k}": v for k, v in
                          cached_embeddings(tasks, backend, preprocess, work / build.name / f"train-{args.precision}-t4").items()})
        videos = {side: cached_embeddings(video_tasks(args.dataset, side, **({"subset_csv": args.dataset / "query_subset.csv"} if side == "query" else {})),
                                          backend, preprocess, work / args.dataset.name / f"{side}-{args.precision}-t4")
                  for side in ("query", "reference")}
    probe = OrientationProbe.load(args.probe) if args.probe else fit_probe(train, args.c)
    truth = layout_truth(args.dataset)
    pairs = {}
    with (args.dataset / "edits.csv").open() as f:
        for line in f.read().splitlines()[1:]:
            q, r, edits = line.split(",")[:3]
            if "rotate90" in edits.split("|"):
                pairs[q] = r
    report = []
    for screen, margin, flip_margin in itertools.product(args.screen_logits, args.margins, args.flip_margins or [probe.flip_margin]):
        rows = []
        for side, group in videos.items():
            for video_id, (intervals, embeddings) in group.items():
                parts = truth.get(video_id, []) if side == "query" else []
                for d in window_decisions(probe, embeddings, args.window, screen, margin, flip_margin):
                    a, b = d["samples"]
                    span = float(intervals[a, 0]), float(intervals[b - 1, 1])
                    rows.append({**d, "video": video_id, "cover": _cover(parts, span, "rotate90"), "vflip_cover": _cover(parts, span, "vflip")})
        turned = [r for r in rows if r["turns"] in (1, 3)]
        flipped = [r for r in rows if r["turns"] == 2]
        def names(rs):
            return [f"{r['video']}[{r['samples'][0]}:{r['samples'][1]}]" for r in rs]
        summary = {
            "screen_logit": screen, "margin": margin, "flip_margin": flip_margin, "windows": len(rows),
            "probed": sum(r["probed"] for r in rows), "rotate90_windows": sum(r["cover"] >= 0.5 for r in rows),
            "turned_over_rotate90": sum(r["cover"] >= 0.5 for r in turned),
            "turned_partly_over_rotate90": sum(0 < r["cover"] < 0.5 for r in turned),
            "turned_without_rotate90": names(r for r in turned if r["cover"] == 0),
            "copied_pairs_with_a_turned_window": sorted({r["video"] for r in turned} & set(pairs)), "copied_pairs": sorted(pairs),
            "vflip_windows": sum(r["vflip_cover"] >= 0.5 for r in rows),
            "flipped_over_vflip": sum(r["vflip_cover"] >= 0.5 for r in flipped),
            "flipped_without_vflip": names(r for r in flipped if r["vflip_cover"] == 0),
        }
        print(json.dumps(summary))
        report.append({**summary, "turned": turned, "flipped": flipped})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
