"""``python main.py``: the code-execution job of the VSC descriptor (and matching) track.

Reads ``query_subset.csv``, ``query_metadata.csv`` and ``query/*.mp4`` under the data
directory and writes ``subset_query_descriptors.npz`` under the output directory. With no
data directory given and no ``/data``, runs on the embedded demo set instead and prints µAP.
``vcd-runtime pack`` (``runtime.pack``) builds the submission zip.

Exit codes: 0 = outputs written (videos that failed are listed in ``errors.json`` and
the summary); 3 = like 0 but some videos failed and ``--strict`` was given; 2 = unusable
input as a whole (a data directory that does not exist, missing or malformed CSVs, bad
options); 1 = unexpected internal error (an output that would break a challenge rule is
never written: the run stops with 1 instead).

Note [Challenge mode]: the challenge forbids logging anything about the files in ``/data``.
With ``--challenge``, ``VCD_CHALLENGE=1`` or a data directory that is ``/data``, the console
gets one pass/fail line per split and totals that name no video, path, count, duration or
latency. Everything else (log records, Python warnings, and whatever native libraries write
to the process's stdout/stderr, since file descriptors 1 and 2 are redirected) goes to
``vcd-runtime.log`` in the output directory, and per-video failures to ``errors.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from runtime.io.dataset import (
    REFERENCE_DESCRIPTORS_FILE,
    SUBSET_MATCHES_FILE,
    SUBSET_QUERY_DESCRIPTORS_FILE,
    DatasetError,
    input_problem,
    video_tasks,
)
from runtime.io.descriptors import (
    DescriptorFileError,
    VideoDescriptors,
    load_descriptors,
    save_descriptors,
)
from runtime.io.fileio import atomic_write_text
from runtime.io.results import ResultStore
from runtime.pipeline.extractor import Extractor, ExtractorConfig, build_extractor
from runtime.records import VideoEmbeddings, VideoFailure, VideoTask

logger = logging.getLogger("runtime.cli")
# The console summary is also logged to the log file, under this name; the console's own log
# handler skips it (the lines are already printed).
_summary_logger = logging.getLogger("runtime.cli.summary")

DEFAULT_DATA_DIR = Path("/data")
DEFAULT_OUTPUT_DIR = Path("/code_execution")
QUERY_DESCRIPTORS_FILE = SUBSET_QUERY_DESCRIPTORS_FILE
MATCHES_FILE = Path("submission") / SUBSET_MATCHES_FILE
DEMO_OUTPUT_DIR = Path("outputs/demo")
LOG_FILE = "vcd-runtime.log"
ERRORS_FILE = "errors.json"


class InternalError(RuntimeError):
    """The runtime itself broke a rule it must keep (exit code 1); no invalid output was left."""


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
    processed: int = 0  # videos extracted in this run (the rest were resumed or failed input checks)
    frames_sampled: int = 0  # samples decoded in this run, and those of them embedded (fewer with --preselect-margin)
    frames_inferred: int = 0
    layouts: dict[str, int] = field(default_factory=dict)  # layout decision kind -> videos extracted in this run (--layout-views)

    @property
    def videos_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _decoded_duration(video: VideoEmbeddings) -> float:
    """The duration the postprocessor budgets with when the metadata has none."""
    if video.info.duration > 0:
        return float(video.info.duration)
    return float(video.intervals[-1, 1]) if len(video.intervals) else 0.0


def run_split(
    tasks: list[VideoTask],
    extractor: Extractor,
    output: Path,
    work_dir: Path,
    split: str,
    progress: bool = True,
) -> tuple[SplitReport, list[VideoDescriptors]]:
    """Extract descriptors for ``tasks``, persisting each video as it finishes.

    Videos finished by an earlier (interrupted) run with the same settings are skipped. The
    output is validated (dims, sorted ids, ids known, total within the budget, using decoded
    durations for ids the metadata lacks) before it replaces ``output``.

    Raises:
        InternalError: the descriptors would break a challenge rule; ``output`` is removed.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    store = ResultStore(work_dir / split, extractor.fingerprint())
    todo: list[VideoTask] = []
    for task in tasks:
        if store.is_done(task.video_id):
            continue
        problem = input_problem(task)
        if problem is not None:
            logger.error("%s: %s", task.video_id, problem)
            store.record_failure(VideoFailure(task.video_id, str(task.path), "input", "InputError", problem))
        else:
            todo.append(task)
    resumed = sum(store.is_done(t.video_id) for t in tasks)
    if resumed:
        logger.info("%s: %d of %d videos already done (resuming)", split, resumed, len(tasks))
    timings: list[float] = []
    layouts: dict[str, int] = {}
    frames = np.zeros(2, dtype=np.int64)  # samples decoded, samples inferred
    by_id = {t.video_id: t for t in todo}
    with tqdm(total=len(todo), desc=f"{split} videos", unit="video", disable=not progress) as bar:
        for result in extractor.run(todo):
            if isinstance(result, VideoEmbeddings):
                frames += (len(result.intervals) if result.sampled is None else result.sampled, len(result.intervals))
                known = by_id[result.video_id].duration
                budget_duration = known if known is not None else _decoded_duration(result)
                try:
                    descriptors = extractor.finalize(result, budget_duration, role=split)
                except (ValueError, ArithmeticError) as exc:  # one bad video must not stop the run
                    result = VideoFailure(result.video_id, result.info.path, "postprocess", type(exc).__name__, str(exc))
                else:
                    store.save(descriptors, budget_duration, layout=result.layout)
                    timings.append(sum(result.timings.values()))
                    if result.layout is not None:
                        layouts[result.layout["kind"]] = layouts.get(result.layout["kind"], 0) + 1
            if isinstance(result, VideoFailure):
                logger.error("%s: %s failed (%s): %s", result.video_id, result.stage, result.error_type, result.message)
                store.record_failure(result)
            bar.update(1)
    done_ids = [t.video_id for t in tasks if store.is_done(t.video_id)]
    done = [store.load(i) for i in done_ids]
    # The budget counts every listed video with a metadata duration, plus the decoded duration
    # of finished videos the metadata lacks (failed ones without metadata add nothing).
    durations = {t.video_id: t.duration for t in tasks if t.duration is not None}
    for video_id in done_ids:
        if video_id not in durations and (decoded := store.budget_duration(video_id)) is not None:
            durations[video_id] = decoded
    try:
        save_descriptors(output, done, dim=extractor.output_dim, durations=durations)
    except DescriptorFileError as exc:
        Path(output).unlink(missing_ok=True)  # never leave a stale or invalid file to submit
        raise InternalError(f"{output}: not written, the {split} descriptors break a challenge rule: {exc}") from exc
    task_ids = {t.video_id for t in tasks}
    report = SplitReport(
        split=split,
        output=output,
        videos=len(tasks),
        succeeded=len(done),
        failures=[f for f in store.failures() if f.video_id in task_ids],
        descriptors=sum(len(v) for v in done),
        seconds=time.perf_counter() - start,
        per_video_seconds=timings,
        processed=len(todo),
        frames_sampled=int(frames[0]), frames_inferred=int(frames[1]),
        layouts=layouts,
    )
    return report, done


class Console:
    """Where the run's summary goes: everything outside challenge mode, pass/fail lines in it."""

    def __init__(self, stream: TextIO, challenge: bool) -> None:
        self.stream = stream
        self.challenge = challenge

    def line(self, text: str) -> None:
        """A line only shown outside challenge mode (it may name videos or numbers); always logged."""
        _summary_logger.info("%s", text)
        if not self.challenge:
            print(text, file=self.stream, flush=True)

    def verdict(self, text: str) -> None:
        """A line shown in every mode: it must not reveal anything about the videos."""
        _summary_logger.info("%s", text)
        print(text, file=self.stream, flush=True)


def _report_split(console: Console, report: SplitReport) -> None:
    t = report.per_video_seconds
    console.line(
        f"[{report.split}] {report.succeeded}/{report.videos} videos, {report.descriptors} descriptors -> {report.output}\n"
        f"[{report.split}] wall {report.seconds:.1f} s, {report.videos_per_second:.2f} videos/s "
        f"({report.processed} extracted); per video (s): "
        f"p50 {_percentile(t, 50):.2f}  p95 {_percentile(t, 95):.2f}  max {max(t) if t else float('nan'):.2f}"
    )
    if report.layouts:  # counts only, and never in challenge mode (Console.line)
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(report.layouts.items()))
        console.line(f"[{report.split}] layout views: {kinds} (each video's decision is in its per-video result)")
    for failure in report.failures:
        console.line(f"[{report.split}] FAILED {failure.video_id} ({failure.stage}, {failure.error_type}): {failure.message}")
    if console.challenge:
        verdict = "pass" if not report.failures else f"fail (details in {ERRORS_FILE} and {LOG_FILE} in the output directory)"
        console.verdict(f"{report.split}: {verdict}")


def _write_errors(output_dir: Path, reports: list[SplitReport]) -> Path:
    path = output_dir / ERRORS_FILE
    rows = [asdict(f) | {"split": r.split} for r in reports for f in r.failures]
    atomic_write_text(path, json.dumps(rows, indent=1, sort_keys=True))
    return path


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends each option's default where the help
    text does not already state it (flags and unset options have none worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return help_text
        return help_text + " (default: %(default)s)"


_DESCRIPTION = """\
The code-execution job of the VSC 2022 descriptor (and matching) track.

Reads DATA_DIR/query_subset.csv, DATA_DIR/query_metadata.csv and DATA_DIR/query/*.mp4 and writes
OUTPUT_DIR/subset_query_descriptors.npz. With no data directory given and no /data, runs the
embedded demo set and prints its uAP. `vcd-runtime pack --help` builds the submission zip.

Challenge mode (on for /data, --challenge or VCD_CHALLENGE=1): the console shows only a pass/fail
line per split; details go to OUTPUT_DIR/errors.json and OUTPUT_DIR/vcd-runtime.log."""

_EPILOG = """\
exit codes:
  0  outputs written (failed videos are listed in errors.json)
  3  like 0, but some videos failed and --strict was given
  2  unusable input as a whole (data dir not found, malformed CSVs, bad options)
  1  internal error (no output that breaks a challenge rule is ever written)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcd-runtime", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=_HelpFormatter)
    io = parser.add_argument_group("input/output")
    io.add_argument("--data-dir", type=Path, default=None,
                    help="challenge data directory (env VCD_DATA_DIR; without either: /data, or the embedded demo when /data is absent)")
    io.add_argument("--output-dir", type=Path, default=None,
                    help="where outputs go (env VCD_OUTPUT_DIR; default /code_execution, or outputs/demo for the demo)")
    io.add_argument("--work-dir", type=Path, default=None, help="per-video results for resuming (default OUTPUT_DIR/.vcd-work)")
    io.add_argument("--demo", action="store_true", help="run the embedded demo set")
    io.add_argument("--challenge", action="store_true",
                    help="challenge mode (see above; implied by a data dir of /data and by VCD_CHALLENGE=1)")
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


@dataclass(frozen=True)
class RunPlan:
    """Where a run reads and writes, resolved from the options, the environment and /data."""

    data_dir: Path
    output_dir: Path
    demo: bool
    challenge: bool


def resolve_plan(args: argparse.Namespace, environ: dict[str, str] | None = None) -> RunPlan:
    """Decide the data and output directories and the mode.

    The demo runs only with ``--demo``, or when no data directory was given (neither
    ``--data-dir`` nor ``VCD_DATA_DIR``) and ``/data`` does not exist.

    Raises:
        DatasetError: an explicitly given data directory does not exist.
    """
    environ = os.environ if environ is None else environ
    explicit = args.data_dir or (Path(environ["VCD_DATA_DIR"]) if environ.get("VCD_DATA_DIR") else None)
    challenge_env = environ.get("VCD_CHALLENGE", "") not in ("", "0")
    if args.demo or (explicit is None and not DEFAULT_DATA_DIR.exists()):
        from runtime.demo import demo_data_dir

        output_dir = args.output_dir or Path(environ.get("VCD_OUTPUT_DIR") or DEMO_OUTPUT_DIR)
        return RunPlan(demo_data_dir(), output_dir, demo=True, challenge=args.challenge or challenge_env)
    data_dir = explicit or DEFAULT_DATA_DIR
    output_dir = args.output_dir or Path(environ.get("VCD_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)
    challenge = args.challenge or challenge_env or os.path.realpath(data_dir) == os.path.realpath(DEFAULT_DATA_DIR)
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: data directory not found" + ("" if data_dir.exists() else " (does not exist)"))
    return RunPlan(data_dir, output_dir, demo=False, challenge=challenge)


@contextlib.contextmanager
def _logging_to(log_path: Path | None, challenge: bool) -> Iterator[TextIO]:
    """Route log records (and, in challenge mode, everything written to fds 1 and 2) for one run.

    Yields the stream the console lines go to.
    """
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_path is not None:
        handlers.append(logging.FileHandler(log_path, encoding="utf-8"))
    if not challenge:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.addFilter(lambda record: record.name != _summary_logger.name)
        handlers.append(console_handler)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    for noisy in ("faiss", "faiss.loader", "faiss.contrib.exhaustive_search"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    try:
        if not challenge:
            yield sys.stdout
            return
        with _native_output_redirected(log_path) as console:
            yield console
    finally:
        logging.captureWarnings(False)
        root.setLevel(previous_level)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def _native_output_redirected(log_path: Path | None) -> Iterator[TextIO]:
    """Point fds 1 and 2 (and ``sys.stdout``/``sys.stderr``) at the log file; yield the real stdout.

    Native libraries (FFmpeg, ONNX Runtime, faiss, codec libraries) write to the file
    descriptors directly, below Python's logging; this is the only way to keep their
    messages, which may name input files, off the console (Note [Challenge mode]).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    sink = os.open(log_path if log_path is not None else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    console = os.fdopen(os.dup(saved[0]), "w", encoding="utf-8", buffering=1)
    try:
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        with (
            open(sink, "w", encoding="utf-8", buffering=1, closefd=False) as text_sink,
            contextlib.redirect_stdout(text_sink),
            contextlib.redirect_stderr(text_sink),
        ):
            yield console
    finally:
        console.flush()
        console.close()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, sink):
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """Run the code-execution job (or ``pack ...``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pack"]:
        from runtime.pack import main as pack_main

        return pack_main(argv[1:])
    if argv[:1] in (["extract"], ["index"]):
        from runtime.commands import main as commands_main

        return commands_main(argv)
    args = build_parser().parse_args(argv)
    challenge_requested = args.challenge or os.environ.get("VCD_CHALLENGE", "") not in ("", "0")
    try:
        plan = resolve_plan(args)
    except (DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}" if not challenge_requested else "error: unusable input: the data directory was not found", file=sys.stderr)
        return 2
    log_path: Path | None = plan.output_dir / LOG_FILE
    try:
        plan.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create the output directory {plan.output_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    with _logging_to(log_path, plan.challenge) as stream:
        console = Console(stream, plan.challenge)
        try:
            return _main(args, plan, console)
        except (DatasetError, DescriptorFileError, ValueError, FileNotFoundError) as exc:
            logger.error("unusable input: %s", exc)
            if plan.challenge:
                console.verdict(f"error: unusable input (exit code 2; details in {LOG_FILE} in the output directory)")
            return 2
        except Exception:
            logger.exception("internal error")
            if plan.challenge:
                console.verdict(f"error: internal error (exit code 1; details in {LOG_FILE} in the output directory)")
            return 1


def _main(args: argparse.Namespace, plan: RunPlan, console: Console) -> int:
    data_dir, output_dir = plan.data_dir, plan.output_dir
    if plan.demo and not args.demo:
        logger.info("no data directory given and %s does not exist: running the embedded demo set", DEFAULT_DATA_DIR)
    progress = not args.no_progress and not plan.challenge
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
    report, queries = run_split(query_tasks, extractor, output_dir / QUERY_DESCRIPTORS_FILE, work_dir, "query", progress)
    reports.append(report)
    refs: list[VideoDescriptors] = []
    if args.track == "matching" and args.reference_descriptors is not None:
        refs = load_descriptors(args.reference_descriptors)
        if refs and refs[0].dim != extractor.output_dim:
            raise ValueError(f"{args.reference_descriptors}: {refs[0].dim}-d descriptors, the extractor makes {extractor.output_dim}-d")
    elif plan.demo or args.references or args.track == "matching":
        ref_tasks = video_tasks(data_dir, "reference")
        report, refs = run_split(ref_tasks, extractor, output_dir / REFERENCE_DESCRIPTORS_FILE, work_dir, "reference", progress)
        reports.append(report)
    for report in reports:
        _report_split(console, report)
    errors = _write_errors(output_dir, reports)
    failed = sum(len(r.failures) for r in reports)
    console.line(f"errors: {failed} video(s) failed; details in {errors}")
    if args.track == "matching":
        from runtime.io.matches import write_matches_csv
        from runtime.matching.matcher import MatchingConfig, find_matches

        matches = find_matches(queries, refs, config=MatchingConfig.for_descriptors(extractor.normalization), already_normalized=True)
        matches_file = output_dir / MATCHES_FILE
        matches_file.parent.mkdir(parents=True, exist_ok=True)
        write_matches_csv(matches, matches_file)
        console.line(f"matching track: {len(matches)} segments -> {matches_file}")
        if plan.challenge:
            console.verdict("matching: pass")
        matching_gt = data_dir / "matching_ground_truth.csv"
        if matching_gt.is_file():
            from runtime.evaluation.matching_track import evaluate_matching_track
            from runtime.io.ground_truth import read_matching_ground_truth

            ap = evaluate_matching_track(matches, read_matching_ground_truth(matching_gt)).ap
            console.line(f"matching track segment AP: {ap:.4f} (ground truth: {matching_gt})")
    ground_truth = data_dir / "descriptor_ground_truth.csv"
    if refs and ground_truth.is_file():
        from runtime.evaluation.descriptor_track import evaluate_descriptor_track
        from runtime.io.ground_truth import read_descriptor_ground_truth

        result = evaluate_descriptor_track(queries, refs, read_descriptor_ground_truth(ground_truth))
        console.line(f"descriptor track µAP: {result.uap:.4f} (recall of ground-truth pairs {result.recall:.3f}) "
                     f"on {len(queries)} queries x {len(refs)} references (ground truth: {ground_truth})")
    code = 3 if failed and args.strict else 0
    if plan.challenge:
        passed = sum(not r.failures for r in reports)
        console.verdict(f"done: {passed} of {len(reports)} splits passed; outputs written; exit code {code}")
    return code


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
