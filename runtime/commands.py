"""``vcd-runtime extract`` and ``vcd-runtime index create|add|remove|info|search``.

``extract`` shards videos over Ray workers (or runs them here) into a resumable store and can
merge it into a challenge npz; ``index`` keeps a persistent reference index (faiss + SQLite,
``runtime.search.persistent``) that grows and shrinks without rebuilds, and searches it with
query videos or descriptor files, reporting descriptor-track scores and matching-track segments.

Exit codes: 0 done; 2 unusable input or a refused request (fingerprint, dims, missing index);
3 some videos failed and ``--strict`` was given; 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from runtime.distributed.driver import RayOptions, extract
from runtime.distributed.sources import video_tasks_from
from runtime.distributed.store import read_provenance, stored_videos
from runtime.io.dataset import VIDEO_SUFFIXES, DatasetError
from runtime.io.descriptors import (
    DescriptorFileError,
    VideoDescriptors,
    load_descriptors,
)
from runtime.pipeline.extractor import ExtractorConfig
from runtime.records import VideoTask
from runtime.search.persistent import (
    CorruptIndex,
    IndexPolicy,
    IndexRequestError,
    ReferenceStore,
)

logger = logging.getLogger("runtime.commands")

COMMANDS = ("extract", "index")


class RequestError(ValueError):
    """A request that cannot be served as given (exit code 2)."""


# -- extract ---------------------------------------------------------------------------------


def build_extract_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcd-runtime extract", description="Extract descriptors into a resumable store, locally or on Ray.")
    parser.add_argument("--videos", required=True, type=Path, help="a directory of .mp4 files, or a text file listing one video path per line")
    parser.add_argument("--out", required=True, type=Path, help="the store of per-video results (a rerun skips finished videos)")
    parser.add_argument("--role", choices=["query", "reference"], default="reference",
                        help="score-normalisation side: references (default) go into an index, queries are searched")
    parser.add_argument("--metadata", type=Path, default=None,
                        help="video_id,duration_sec CSV for the budget (default: DIR/../<DIR>_metadata.csv when present)")
    parser.add_argument("--merge", type=Path, default=None, help="also write the finished videos as one challenge npz here")
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|ADDRESS",
                        help="shard over Ray: 'auto' = the running cluster or a new local one, or a cluster address")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: what the cluster's CPUs or GPUs allow)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per Ray worker (also its inference threads)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray worker; > 0 runs the GPU pipeline, one engine per worker")
    parser.add_argument("--chunk-size", type=int, default=2, help="videos per Ray call")
    parser.add_argument("--strict", action="store_true", help="exit with code 3 when any video failed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    ExtractorConfig.add_arguments(parser)
    return parser


def _extractor_config(args: argparse.Namespace, gpu_workers: bool = False) -> ExtractorConfig:
    """The command line's extractor settings; a combination no device runs is refused here,
    before any worker starts (e.g. ``--layout-views`` with the GPU path)."""
    config = ExtractorConfig.from_args(args)
    problem = config.layout_problem("gpu" if gpu_workers else config.device)
    if problem is not None:
        raise RequestError(problem)
    return config


def extract_main(argv: list[str]) -> int:
    args = build_extract_parser().parse_args(argv)
    config = _extractor_config(args, gpu_workers=args.ray is not None and args.gpus_per_worker > 0)
    tasks = video_tasks_from(args.videos, args.metadata)
    ray = None
    if args.ray is not None:
        ray = RayOptions(address=args.ray, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                         gpus_per_worker=args.gpus_per_worker, chunk_size=args.chunk_size)
    report = extract(tasks, args.out, config, args.role, ray, merge=args.merge, progress=not args.no_progress)
    print(f"{report.succeeded}/{report.videos} videos in {report.store} ({report.already_done} done before), "
          f"{report.workers} worker(s), {report.seconds:.1f} s, {report.worker_deaths} worker death(s); fingerprint {report.fingerprint}")
    if report.merged is not None:
        print(f"merged -> {report.merged}")
    for failure in report.failures:
        print(f"FAILED {failure.video_id} ({failure.stage}, {failure.error_type}): {failure.message}")
    return 3 if report.failures and args.strict else 0


# -- index -----------------------------------------------------------------------------------


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    d = IndexPolicy()
    group = parser.add_argument_group("index kind (used when the index is created)")
    group.add_argument("--flat-max-rows", type=int, default=d.flat_max_rows, help="exact flat index up to this many descriptors")
    group.add_argument("--approximate", choices=["ivf", "ivfpq"], default=d.approximate, help="index kind past that size")
    group.add_argument("--nlist", type=int, default=None, help="IVF cells (default 4 sqrt(N), a power of two)")
    group.add_argument("--nprobe", type=int, default=None, help="IVF cells visited per query (default nlist/16)")


def _policy(args: argparse.Namespace) -> IndexPolicy:
    return IndexPolicy(args.flat_max_rows, args.approximate, args.nlist, args.nprobe)


def build_index_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcd-runtime index", description="A persistent reference index (faiss + SQLite).")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make an empty index for the model of a store or descriptor file")
    create.add_argument("index", type=Path)
    create.add_argument("like", type=Path, help="an extraction store or merged npz whose model the index is for")
    _policy_arguments(create)
    add = sub.add_parser("add", help="add the reference videos of extraction stores or merged npz files")
    add.add_argument("index", type=Path)
    add.add_argument("sources", type=Path, nargs="+")
    add.add_argument("--create", action="store_true", help="create the index first when it does not exist")
    _policy_arguments(add)
    remove = sub.add_parser("remove", help="remove videos by id")
    remove.add_argument("index", type=Path)
    remove.add_argument("video_ids", nargs="+")
    info = sub.add_parser("info", help="print what the index holds (JSON)")
    info.add_argument("index", type=Path)
    search = sub.add_parser("search", help="search query videos or descriptor files")
    search.add_argument("index", type=Path)
    search.add_argument("queries", type=Path, nargs="+", help="query .mp4 files or directories (extracted here) or merged query npz files")
    search.add_argument("--out", type=Path, default=None, help="write X.json, or X.csv (scores) + X.matches.csv (segments); default: JSON on stdout")
    search.add_argument("--k", type=int, default=20, help="reference descriptors retrieved per query descriptor")
    search.add_argument("--max-refs", type=int, default=25, help="candidate references kept per query")
    search.add_argument("--nprobe", type=int, default=None, help="IVF cells visited (default: the index's)")
    search.add_argument("--no-matches", action="store_true", help="only descriptor-track scores, no segment localisation")
    search.add_argument("--trust-descriptors", action="store_true",
                        help="accept descriptor files without a fingerprint record (dims are still checked)")
    ExtractorConfig.add_arguments(search)
    return parser


def _source_videos(source: Path) -> tuple[list[VideoDescriptors], dict]:
    """The descriptors and provenance of an extraction store or merged npz."""
    provenance = read_provenance(source)
    if provenance is None:
        what = "run.json" if source.is_dir() else source.with_name(source.stem + ".fingerprint.json").name
        raise RequestError(f"{source}: no fingerprint record ({what}); make descriptors with `vcd-runtime extract` (--merge writes one)")
    videos = stored_videos(source) if source.is_dir() else load_descriptors(source)
    return videos, provenance


def _index_add(args: argparse.Namespace) -> int:
    loaded = [(s, *_source_videos(s)) for s in args.sources]
    for source, _, provenance in loaded:
        if provenance.get("role") != "reference":
            raise RequestError(f"{source}: {provenance.get('role')} descriptors; an index holds references "
                               "(extract them with --role reference: queries carry the score-normalisation bias instead)")
    if args.create and not (args.index / "catalog.sqlite").exists():
        source, videos, provenance = loaded[0]
        dim = provenance.get("dim") or (videos[0].dim if videos else None)
        if dim is None:
            raise RequestError(f"{source}: no descriptors to take the dimension from")
        ReferenceStore.create(args.index, provenance["fingerprint"], int(dim), _policy(args), _attributes(provenance)).close()
    with ReferenceStore.open(args.index) as store:
        for source, videos, provenance in loaded:
            added, skipped = store.add(videos, provenance["fingerprint"])
            print(f"{source}: added {len(added)} videos" + (f", {len(skipped)} already in the index (skipped)" if skipped else ""))
        print(json.dumps(store.info()))
    return 0


def _attributes(provenance: dict) -> dict:
    """What the search needs to know of the model: whether the descriptors are score-normalised."""
    return {"score_normalized": bool(provenance.get("score_normalized", True))}


def _query_videos(args: argparse.Namespace, store: ReferenceStore) -> list[VideoDescriptors]:
    videos: list[VideoDescriptors] = []
    media = [q for q in args.queries if q.is_dir() or q.suffix in VIDEO_SUFFIXES]
    for path in (q for q in args.queries if q not in media):
        provenance = read_provenance(path)
        if provenance is None and not args.trust_descriptors:
            raise RequestError(f"{path}: no fingerprint record ({path.stem}.fingerprint.json); pass --trust-descriptors to search it anyway")
        if provenance is not None:
            if provenance["fingerprint"] != store.fingerprint:
                raise RequestError(f"{path}: descriptors of model fingerprint {provenance['fingerprint']}; the index holds {store.fingerprint}")
            if provenance.get("role") != "query":
                raise RequestError(f"{path}: {provenance.get('role')} descriptors; search takes query descriptors (extract with --role query)")
        videos += load_descriptors(path)
    if media:
        from runtime.distributed.store import descriptor_fingerprint
        from runtime.distributed.worker import ExtractionWorker, Finished

        tasks = []
        for path in media:
            tasks += video_tasks_from(path) if path.is_dir() else [VideoTask(path.stem, path, None)]
        worker = ExtractionWorker(_extractor_config(args), "query")
        if descriptor_fingerprint(worker.fingerprint()) != store.fingerprint:
            raise RequestError(f"the extractor's settings give fingerprint {descriptor_fingerprint(worker.fingerprint())}; "
                               f"the index holds {store.fingerprint} (use the settings the references were extracted with)")
        for outcome in worker.iter_process(tasks):
            if isinstance(outcome, Finished):
                videos.append(outcome.descriptors)
            else:
                logger.error("%s: %s failed (%s): %s", outcome.video_id, outcome.stage, outcome.error_type, outcome.message)
    return sorted(videos, key=lambda v: v.video_id)


def _index_search(args: argparse.Namespace) -> int:
    from runtime.matching.matcher import MatchingConfig, find_matches
    from runtime.postprocess.score_normalization import ScoreNormalization
    from runtime.search.candidates import candidate_pairs

    with ReferenceStore.open(args.index) as store:
        queries = [q for q in _query_videos(args, store) if len(q)]
        normalized = store.attributes.get("score_normalized", True)
        config = MatchingConfig.for_descriptors(ScoreNormalization() if normalized else None)
        candidates, matches = [], []
        for query in queries:  # each query on its own: its results never depend on the others
            found = candidate_pairs(store.knn(query, args.k, args.nprobe))[: args.max_refs]
            candidates += found
            if found and not args.no_matches:
                refs = store.load_videos(sorted({c.ref_id for c in found}))
                matches += find_matches([query], refs, config=config, already_normalized=True)
    _write_results(args.out, candidates, matches)
    return 0


def _write_results(out: Path | None, candidates, matches) -> None:
    doc = {"candidates": [asdict(c) for c in candidates], "matches": [asdict(m) for m in matches]}
    if out is None:
        print(json.dumps(doc, indent=1))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        import csv

        from runtime.io.matches import write_matches_csv

        with open(out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query_id", "ref_id", "score"])
            writer.writerows((c.query_id, c.ref_id, f"{c.score:.6f}") for c in candidates)
        write_matches_csv(matches, out.with_name(out.stem + ".matches.csv"))
    else:
        out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"{len(candidates)} candidate pairs, {len(matches)} segments -> {out}")


def index_main(argv: list[str]) -> int:
    args = build_index_parser().parse_args(argv)
    if args.action == "create":
        _, provenance = _source_videos(args.like)
        dim = provenance.get("dim") or next((v.dim for v in _source_videos(args.like)[0]), None)
        if dim is None:
            raise RequestError(f"{args.like}: no descriptors to take the dimension from")
        ReferenceStore.create(args.index, provenance["fingerprint"], int(dim), _policy(args), _attributes(provenance)).close()
        print(f"created {args.index} (fingerprint {provenance['fingerprint']}, dim {dim})")
        return 0
    if args.action == "add":
        return _index_add(args)
    if args.action == "search":
        return _index_search(args)
    with ReferenceStore.open(args.index) as store:
        if args.action == "remove":
            removed, missing = store.remove(args.video_ids)
            print(f"removed {len(removed)} videos" + (f"; not in the index: {', '.join(missing)}" if missing else ""))
        print(json.dumps(store.info(), indent=1))
    return 0


def main(argv: list[str]) -> int:
    """``argv[0]`` is ``extract`` or ``index``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command, rest = argv[0], argv[1:]
    try:
        return extract_main(rest) if command == "extract" else index_main(rest)
    except (RequestError, IndexRequestError, CorruptIndex, DatasetError, DescriptorFileError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
