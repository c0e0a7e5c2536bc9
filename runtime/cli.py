"""``python main.py``: the code-execution job of the VSC descriptor (and matching) track.

Reads ``query_subset.csv``, ``query_metadata.csv`` and ``query/*.mp4`` under the data
directory and writes ``subset_query_descriptors.npz`` under the output directory. When
the data directory does not exist, runs on the embedded demo set instead and prints µAP.

Exit codes: 0 = outputs written (videos that failed are listed in ``errors.json`` and
the summary); 3 = like 0 but some videos failed and ``--strict`` was given; 2 = unusable
input as a whole (missing or malformed CSVs, bad options); 1 = unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.io.dataset import DatasetError, video_tasks
from runtime.io.descriptors import (
    VideoDescriptors,
    load_descriptors,
    save_descriptors,
    validate_descriptor_file,
)
from runtime.io.fileio import atomic_write_text
from runtime.io.results import ResultStore
from runtime.pipeline.extractor import Extractor, ExtractorConfig, build_extractor
from runtime.records import VideoEmbeddings, VideoFailure, VideoTask

logger = logging.getLogger("runtime.cli")

DEFAULT_DATA_DIR = Path("/data")
DEFAULT_OUTPUT_DIR = Path("/code_execution")
QUERY_DESCRIPTORS_FILE = "subset_query_descriptors.npz"
REFERENCE_DESCRIPTORS_FILE = "reference_descriptors.npz"
MATCHES_FILE = Path("submission") / "subset_matches.csv"
DEMO_OUTPUT_DIR = Path("outputs/demo")


@dataclass
class SplitReport:
    """What one split's run produced."""

    split: str
    output: Path
    videos: int
    succeeded: int
    failures: list[VideoFailure]
    descriptors: int
    seconds: float
    per_video_seconds: list[float] = field(default_factory=list)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_split(
    tasks: list[VideoTask],
    extractor: Extractor,
    output: Path,
    work_dir: Path,
    split: str,
    progress: bool = True,
) -> tuple[SplitReport, list[VideoDescriptors]]:
    """Extract descriptors for ``tasks``, persisting each video as it finishes.

    Videos finished by an earlier (interrupted) run with the same settings are skipped.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    store = ResultStore(work_dir / split, extractor.fingerprint())
    todo = [t for t in tasks if not store.is_done(t.video_id)]
    if len(todo) < len(tasks):
        logger.info("%s: %d of %d videos already done (resuming)", split, len(tasks) - len(todo), len(tasks))
    timings: list[float] = []
    by_id = {t.video_id: t for t in todo}
    with tqdm(total=len(todo), desc=f"{split} videos", unit="video", disable=not progress) as bar:
        for result in extractor.run(todo):
            if isinstance(result, VideoEmbeddings):
                try:
                    descriptors = extractor.finalize(result, by_id[result.video_id].duration, role=split)
                except (ValueError, ArithmeticError) as exc:  # one bad video must not stop the run
                    result = VideoFailure(result.video_id, result.info.path, "postprocess", type(exc).__name__, str(exc))
                else:
                    store.save(descriptors)
                    timings.append(sum(result.timings.values()))
            if isinstance(result, VideoFailure):
                logger.error("%s: %s failed (%s): %s", result.video_id, result.stage, result.error_type, result.message)
                store.record_failure(result)
            bar.update(1)
    done = [store.load(t.video_id) for t in tasks if store.is_done(t.video_id)]
    save_descriptors(output, done, dim=extractor.output_dim)
    durations = {t.video_id: t.duration for t in tasks if t.duration is not None}
    # The budget check needs every duration; the format checks always run.
    validate_descriptor_file(output, durations if len(durations) == len(tasks) else None)
    failures = [f for f in store.failures() if f.video_id in {t.video_id for t in tasks}]
    report = SplitReport(
        split=split,
        output=output,
        videos=len(tasks),
        succeeded=len(done),
        failures=failures,
        descriptors=sum(len(v) for v in done),
        seconds=time.perf_counter() - start,
        per_video_seconds=timings,
    )
    return report, done


def _print_report(report: SplitReport) -> None:
    t = report.per_video_seconds
    print(
        f"[{report.split}] {report.succeeded}/{report.videos} videos, {report.descriptors} descriptors -> {report.output}\n"
        f"[{report.split}] wall {report.seconds:.1f} s; per video (s): "
        f"p50 {_percentile(t, 50):.2f}  p95 {_percentile(t, 95):.2f}  max {max(t) if t else float('nan'):.2f}"
    )
    for failure in report.failures:
        print(f"[{report.split}] FAILED {failure.video_id} ({failure.stage}, {failure.error_type}): {failure.message}")


def _write_errors(output_dir: Path, reports: list[SplitReport]) -> Path:
    path = output_dir / "errors.json"
    rows = [asdict(f) | {"split": r.split} for r in reports for f in r.failures]
    atomic_write_text(path, json.dumps(rows, indent=1, sort_keys=True))
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcd-runtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("input/output")
    io.add_argument("--data-dir", type=Path, default=Path(os.environ.get("VCD_DATA_DIR", DEFAULT_DATA_DIR)),
                    help="challenge data directory (env VCD_DATA_DIR; default /data). When it does not exist the embedded demo runs.")
    io.add_argument("--output-dir", type=Path, default=None,
                    help="where outputs go (env VCD_OUTPUT_DIR; default /code_execution, or outputs/demo for the demo)")
    io.add_argument("--work-dir", type=Path, default=None, help="per-video results for resuming (default OUTPUT_DIR/.vcd-work)")
    io.add_argument("--demo", action="store_true", help="run the embedded demo set even if the data dir exists")
    io.add_argument("--references", action="store_true", help="also extract reference/*.mp4 (reference_descriptors.npz)")
    io.add_argument("--track", choices=["descriptor", "matching"], default="descriptor",
                    help="matching also writes OUTPUT_DIR/submission/subset_matches.csv (needs reference descriptors)")
    io.add_argument("--reference-descriptors", type=Path, default=None,
                    help="reference descriptors computed earlier with the same settings (default: extract DATA_DIR/reference)")
    io.add_argument("--fresh", action="store_true", help="ignore per-video results of an earlier run")
    io.add_argument("--strict", action="store_true", help="exit with code 3 when any video failed")
    io.add_argument("--no-progress", action="store_true", help="no progress bars")
    ExtractorConfig.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss", "faiss.loader", "faiss.contrib.exhaustive_search"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return _main(args)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2


def _main(args: argparse.Namespace) -> int:
    demo = args.demo or not args.data_dir.exists()
    if demo:
        from runtime.demo import demo_data_dir

        if not args.demo:
            logger.info("%s does not exist: running the embedded demo set", args.data_dir)
        data_dir = demo_data_dir()
        output_dir = args.output_dir or Path(os.environ.get("VCD_OUTPUT_DIR", DEMO_OUTPUT_DIR))
    else:
        data_dir = args.data_dir
        output_dir = args.output_dir or Path(os.environ.get("VCD_OUTPUT_DIR", DEFAULT_OUTPUT_DIR))
    work_dir = args.work_dir or output_dir / ".vcd-work"
    subset = data_dir / "query_subset.csv"
    query_tasks = video_tasks(data_dir, "query", subset_csv=subset if subset.is_file() else None)
    if not query_tasks:
        raise DatasetError(f"{subset if subset.is_file() else data_dir / 'query'}: no query videos listed")
    extractor = build_extractor(ExtractorConfig.from_args(args))
    logger.info("extractor: %s", extractor.describe())
    if args.fresh:
        for split in ("query", "reference"):
            ResultStore(work_dir / split, extractor.fingerprint()).clear()
    reports = []
    report, queries = run_split(query_tasks, extractor, output_dir / QUERY_DESCRIPTORS_FILE, work_dir, "query", not args.no_progress)
    reports.append(report)
    refs: list[VideoDescriptors] = []
    if args.track == "matching" and args.reference_descriptors is not None:
        refs = load_descriptors(args.reference_descriptors)
        if refs and refs[0].dim != extractor.output_dim:
            raise ValueError(f"{args.reference_descriptors}: {refs[0].dim}-d descriptors, the extractor makes {extractor.output_dim}-d")
    elif demo or args.references or args.track == "matching":
        ref_tasks = video_tasks(data_dir, "reference")
        report, refs = run_split(ref_tasks, extractor, output_dir / REFERENCE_DESCRIPTORS_FILE, work_dir, "reference", not args.no_progress)
        reports.append(report)
    for report in reports:
        _print_report(report)
    errors = _write_errors(output_dir, reports)
    failed = sum(len(r.failures) for r in reports)
    print(f"errors: {failed} video(s) failed; details in {errors}")
    if args.track == "matching":
        from runtime.io.matches import write_matches_csv
        from runtime.matching.matcher import MatchingConfig, find_matches

        matches = find_matches(queries, refs, config=MatchingConfig.for_descriptors(extractor.normalization), already_normalized=True)
        matches_file = output_dir / MATCHES_FILE
        matches_file.parent.mkdir(parents=True, exist_ok=True)
        write_matches_csv(matches, matches_file)
        print(f"matching track: {len(matches)} segments -> {matches_file}")
        matching_gt = data_dir / "matching_ground_truth.csv"
        if matching_gt.is_file():
            from runtime.evaluation.matching_track import evaluate_matching_track
            from runtime.io.ground_truth import read_matching_ground_truth

            print(f"matching track segment AP: {evaluate_matching_track(matches, read_matching_ground_truth(matching_gt)).ap:.4f}")
    ground_truth = data_dir / "descriptor_ground_truth.csv"
    if refs and ground_truth.is_file():
        from runtime.evaluation.descriptor_track import evaluate_descriptor_track
        from runtime.io.ground_truth import read_descriptor_ground_truth

        result = evaluate_descriptor_track(queries, refs, read_descriptor_ground_truth(ground_truth))
        print(f"descriptor track µAP: {result.uap:.4f} (recall of ground-truth pairs {result.recall:.3f}) on {len(queries)} queries x {len(refs)} references")
    return 3 if failed and args.strict else 0


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
