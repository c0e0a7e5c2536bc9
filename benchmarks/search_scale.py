"""Search at scale: exhaustive vs approximate faiss indexes over ~1.2 million reference descriptors.

The reference set is built from real descriptors (mini-VSC references extracted with the shipped
pipeline, plus the shipped noise set of training references, all as 129-d reference rows), each
synthetic row a mix of two real rows plus Gaussian noise, re-normalised like the pipeline's
output; the real rows are kept too. Queries are real mini-VSC query descriptors (score-normalised
query rows), searched one query video per faiss call like ``vcd-runtime index search``.

Measures build time, resident memory added, per-query-video latency (p50/p95) and recall of the
exhaustive top-k (the flat index's per-descriptor top-k), and the persistent index's incremental
add/remove at that size. Run with ``nice``; peak memory stays below ~5 GB for 1.2 M rows.

    python -m benchmarks.search_scale --refs STORE_OR_NPZ --queries STORE_OR_NPZ --rows 1200000 --json OUT

``--extract DATASET`` first extracts DATASET/reference and DATASET/query through Ray with 1 and
then 2 workers (and locally, in this process), in one run on one Ray cluster, timing each and
checking the merged npz files are identical; the 2-worker stores then serve as --refs/--queries.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load(source: Path):
    from runtime.distributed.store import stored_videos
    from runtime.io.descriptors import load_descriptors

    return stored_videos(source) if source.is_dir() else load_descriptors(source)


def synthetic_references(real: np.ndarray, rows: int, seed: int = 0, noise: float = 0.03) -> np.ndarray:
    """``rows`` reference rows: the real ones, then mixes of two real rows plus noise (unit norm, last dim 1)."""
    rng = np.random.default_rng(seed)
    body = real[:, :-1]
    out = np.empty((rows, real.shape[1]), np.float32)
    out[: len(real)] = real
    for start in range(len(real), rows, 100_000):
        n = min(100_000, rows - start)
        i, j = rng.integers(0, len(body), n), rng.integers(0, len(body), n)
        a = rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32)
        x = a * body[i] + (1 - a) * body[j] + rng.normal(0, noise, (n, body.shape[1])).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + n, :-1] = x
        out[start : start + n, -1] = 1.0  # the reference side of score normalisation
    return out


def _search_all(index, queries, k: int) -> tuple[list[np.ndarray], list[float]]:
    ids, latencies = [], []
    for q in queries:
        start = time.perf_counter()
        _, found = index.search(np.ascontiguousarray(q.features, np.float32), k)
        latencies.append(time.perf_counter() - start)
        ids.append(found)
    return ids, latencies


def _recall(exact: list[np.ndarray], approx: list[np.ndarray]) -> float:
    hit = total = 0
    for e, a in zip(exact, approx):
        for row_e, row_a in zip(e, a):
            hit += len(set(row_e.tolist()) & set(row_a.tolist()))
            total += len(row_e)
    return hit / max(total, 1)


def _row(name, build_s, mem_mb, latencies, recall, extra=None) -> dict:
    ms = np.array(latencies) * 1000
    return {"index": name, "build_s": round(build_s, 2), "memory_mb": round(mem_mb, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "recall": round(recall, 4), **(extra or {})}


def ray_throughput(dataset: Path, work: Path, workers: tuple[int, ...] = (1, 2)) -> dict:
    """Extract the dataset's references and queries locally and with each Ray worker count; videos/s excluding cluster start."""
    import ray

    from runtime.distributed.driver import RayOptions, connect_ray, extract
    from runtime.distributed.sources import video_tasks_from
    from runtime.pipeline.extractor import ExtractorConfig

    start = time.perf_counter()
    connect_ray("auto")
    cluster_start = time.perf_counter() - start
    config = ExtractorConfig(device="cpu")
    out: dict = {"cluster_start_s": round(cluster_start, 1), "cluster_cpus": ray.cluster_resources().get("CPU"), "runs": []}
    merged: dict[str, set[bytes]] = {"reference": set(), "query": set()}
    for mode in ("local", *workers):
        for role in ("reference", "query"):
            tasks = video_tasks_from(dataset / role)
            options = None if mode == "local" else RayOptions(workers=mode, chunk_size=2)
            store = work / f"{mode}" / role
            report = extract(tasks, store, config, role, options, merge=work / f"{mode}_{role}.npz", progress=False)
            merged[role].add((work / f"{mode}_{role}.npz").read_bytes())
            out["runs"].append({"mode": "local (in-process)" if mode == "local" else f"ray, {mode} worker(s)", "role": role,
                                "videos": report.succeeded, "seconds": round(report.seconds, 1),
                                "videos_per_s": round(report.succeeded / report.seconds, 3)})
            print(out["runs"][-1], flush=True)
    out["merged_identical"] = all(len(v) == 1 for v in merged.values())
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extract", type=Path, default=None, help="a mini-VSC dataset: first measure 1 vs 2 Ray workers on it")
    parser.add_argument("--work", type=Path, default=Path("outputs/search_scale"), help="where --extract puts its stores")
    parser.add_argument("--refs", type=Path, default=None, help="reference descriptors (extraction store or npz)")
    parser.add_argument("--queries", type=Path, default=None, help="query descriptors (extraction store or npz)")
    parser.add_argument("--noise-set", type=Path, default=Path("model_assets/noise_set.npz"), help="extra real rows (training references)")
    parser.add_argument("--rows", type=int, default=1_200_000)
    parser.add_argument("--k", type=int, default=20, help="neighbours per query descriptor (the matcher's 20)")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobes", default="8,16,32,64,128")
    parser.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0 = default)")
    parser.add_argument("--persistent", action="store_true", help="also time the persistent index's add/remove at this size")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    throughput = None
    if args.extract is not None:
        throughput = ray_throughput(args.extract, args.work)
        args.refs, args.queries = args.refs or args.work / "2_reference.npz", args.queries or args.work / "2_query.npz"
    if args.refs is None or args.queries is None:
        parser.error("--refs and --queries are required without --extract")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    refs = [v for v in _load(args.refs) if len(v)]
    queries = [v for v in _load(args.queries) if len(v)]
    real = np.concatenate([v.features for v in refs]).astype(np.float32)
    with np.load(args.noise_set) as data:
        noise = data["noise"].astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    real = np.concatenate([real, np.concatenate([noise, np.ones((len(noise), 1), np.float32)], axis=1)])
    dim = real.shape[1]
    data = synthetic_references(real, args.rows)
    ids = np.arange(len(data), dtype=np.int64)
    print(f"{len(data)} reference rows of dim {dim} from {len(real)} real ones; {len(queries)} query videos, "
          f"{sum(len(q) for q in queries)} query descriptors; k={args.k}", flush=True)
    results = []

    mem0, start = _rss_mb(), time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    flat.add_with_ids(data, ids)
    build, mem = time.perf_counter() - start, _rss_mb() - mem0
    exact, lat = _search_all(flat, queries, args.k)
    results.append(_row("flat (IndexIDMap2 over IndexFlatIP, exhaustive)", build, mem, lat, 1.0))
    print(results[-1], flush=True)
    del flat

    from runtime.search.persistent import IndexPolicy, pq_subquantizers, train_ivf

    for kind in ("ivf", "ivfpq"):
        mem0, start = _rss_mb(), time.perf_counter()
        index = train_ivf(data, IndexPolicy(flat_max_rows=0, approximate=kind, nlist=args.nlist), dim)
        train = time.perf_counter() - start
        index.add_with_ids(data, ids)
        build, mem = time.perf_counter() - start, _rss_mb() - mem0
        for nprobe in [int(p) for p in args.nprobes.split(",")]:
            index.nprobe = nprobe
            found, lat = _search_all(index, queries, args.k)
            name = f"IVF{args.nlist},Flat" if kind == "ivf" else f"IVF{args.nlist},PQ{pq_subquantizers(dim, None)}x8"
            results.append(_row(f"{name} nprobe={nprobe}", build, mem, lat, _recall(exact, found), {"train_s": round(train, 2)}))
            print(results[-1], flush=True)
        del index

    persistent = None
    if args.persistent:
        persistent = _persistent(data, dim, args.nlist)
        print(persistent, flush=True)
    doc = {"rows": len(data), "dim": dim, "real_rows": len(real), "query_videos": len(queries), "k": args.k,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": results, "persistent": persistent, "ray_extraction": throughput}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


def _persistent(data: np.ndarray, dim: int, nlist: int) -> dict:
    """The persistent index at this size: one bulk add (flat -> IVF switch), then one video's add and remove."""
    from runtime.io.descriptors import VideoDescriptors
    from runtime.search.persistent import IndexPolicy, ReferenceStore

    per_video = 30
    videos = [VideoDescriptors(f"R{i:07d}", np.zeros((min(per_video, len(data) - s), 2), np.float32), data[s : s + per_video])
              for i, s in enumerate(range(0, len(data), per_video))]
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        start = time.perf_counter()
        store = ReferenceStore.create(Path(tmp) / "idx", "bench", dim, IndexPolicy(nlist=nlist))
        store.add(videos, "bench")
        bulk = time.perf_counter() - start
        extra = VideoDescriptors("NEW", np.zeros((per_video, 2), np.float32), data[:per_video])
        start = time.perf_counter()
        store.add([extra], "bench")
        one_add = time.perf_counter() - start
        start = time.perf_counter()
        store.remove(["NEW"])
        one_remove = time.perf_counter() - start
        info = store.info()
        store.close()
        start = time.perf_counter()
        ReferenceStore.open(Path(tmp) / "idx").close()
        reopen = time.perf_counter() - start
        disk = sum(p.stat().st_size for p in (Path(tmp) / "idx").iterdir())
    return {"videos": len(videos), "bulk_add_s": round(bulk, 1), "add_one_video_s": round(one_add, 2), "remove_one_video_s": round(one_remove, 2),
            "open_s": round(reopen, 2), "disk_mb": round(disk / 2**20, 1), "kind": info["kind"], "nprobe": info.get("nprobe")}


if __name__ == "__main__":
    raise SystemExit(main())
