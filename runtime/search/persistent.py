"""A persistent reference index: faiss vectors + an SQLite catalogue, with add and remove.

Layout of an index directory:

* ``catalog.sqlite``: ``meta`` (format, model fingerprint, dim, index kind, search settings,
  ``generation``), ``videos`` (id, when added, exact features and timestamps as blobs) and
  ``rows`` (one per descriptor: the faiss id, its video, start and end seconds).
* ``vectors.<generation>.faiss``: the faiss index of that generation. While small it is an
  ``IndexIDMap2`` over ``IndexFlatIP`` (exact); past ``IndexPolicy.flat_max_rows`` it becomes
  an ``IndexIVFFlat`` (or ``IndexIVFPQ``) trained once from the data and holding the same ids.
* ``lock``: writers hold an exclusive ``flock`` on it.

Note [Atomic generations]: a write (add or remove) never rebuilds the index: it loads
generation g, adds or removes the rows in memory, writes ``vectors.<g+1>.faiss`` to a temporary
name, fsyncs and renames it, and only then commits the SQLite transaction that records the rows
and sets ``generation = g+1``. That commit is the single point of change: killed before it, the
catalogue still names generation g, whose file is untouched (the orphan g+1 file is removed by
the next writer); killed after it, the catalogue names g+1, which is complete on disk. An
index therefore opens as before or as after a write, never in between. (Writing the faiss
file *after* the commit would leave a window where the catalogue names a file that does not
exist yet.) On open, the row count of the faiss file is checked against the catalogue.

Note [Flat to IVF]: the one step that is not incremental is the switch from the exact flat
index to IVF, done once inside the ``add`` that crosses ``flat_max_rows``: the coarse quantiser
is trained (k-means, on the GPU when faiss has one) from the vectors then in the index, and
every vector is moved over with its id. Later adds assign new vectors to the trained cells;
removals delete ids from their cells. The quantiser is not retrained as the data drifts
(TODO(issue 14): retrain when the cell sizes become unbalanced).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.search.index import FramePairs

logger = logging.getLogger(__name__)

FORMAT = 1
CATALOG = "catalog.sqlite"
KINDS = ("flat", "ivf", "ivfpq")


class IndexRequestError(ValueError):
    """Base class of the persistent index's errors (a bad request, not a broken index)."""


class FingerprintMismatch(IndexRequestError):
    """Descriptors made by another model or settings than the index's."""


class CorruptIndex(RuntimeError):
    """The directory is not a usable index (missing files, counts that disagree)."""


@dataclass(frozen=True)
class IndexPolicy:
    """How the faiss index is chosen as it grows.

    Attributes:
        flat_max_rows: the exact flat index is kept up to this many descriptors.
        approximate: kind used past it, ``ivf`` (IVF-Flat) or ``ivfpq`` (IVF-PQ, 8-bit codes).
        nlist: IVF cells (default: ``4 sqrt(rows)`` rounded to a power of two, 64..65536).
        nprobe: cells visited per query (default: ``nlist / 16``; the benchmark in
            ``benchmarks/RESULTS.md`` measured recall >= 0.99 of the exhaustive top-k there).
        pq_m: IVF-PQ sub-quantisers (default: the largest divisor of the dim giving >= 3 dims each).
    """

    flat_max_rows: int = 200_000
    approximate: str = "ivf"
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None

    def __post_init__(self) -> None:
        if self.approximate not in KINDS[1:]:
            raise ValueError(f"approximate must be one of {KINDS[1:]}, got {self.approximate!r}")
        if self.flat_max_rows < 0:
            raise ValueError(f"flat_max_rows must be >= 0, got {self.flat_max_rows}")

    def cells(self, rows: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return int(min(65536, max(64, 2 ** round(math.log2(max(4 * math.sqrt(rows), 1))))))


def pq_subquantizers(dim: int, wanted: int | None) -> int:
    if wanted is not None:
        if dim % wanted:
            raise ValueError(f"pq_m must divide the dim {dim}, got {wanted}")
        return wanted
    return max(m for m in range(1, dim + 1) if dim % m == 0 and dim // m >= 3) if dim >= 3 else 1


@dataclass(frozen=True)
class _Rows:
    """All descriptor rows, sorted by faiss id, with the owning video of each."""

    ids: np.ndarray  # (N,) int64, ascending
    video: np.ndarray  # (N,) int64 index into video_ids
    timestamps: np.ndarray  # (N, 2) float32
    video_ids: tuple[str, ...]


class ReferenceStore:
    """A persistent, growable reference index. Open with :meth:`create` or :meth:`open`.

    Reads need no lock (a reader keeps the generation it opened); writes take the directory's
    lock and follow Note [Atomic generations].
    """

    def __init__(self, path: Path, db: sqlite3.Connection, meta: dict[str, Any], index: Any) -> None:
        self.path = path
        self._db = db
        self.meta = meta
        self.index = index
        self._rows: _Rows | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike, fingerprint: str, dim: int, policy: IndexPolicy = IndexPolicy(), attributes: dict | None = None
    ) -> ReferenceStore:
        """Make a new, empty index directory.

        Args:
            path: the directory (created; must not hold an index already).
            fingerprint: the model fingerprint every added descriptor must carry.
            dim: the descriptor dimension.
            policy: when to switch to an approximate index, and its settings.
            attributes: JSON facts about the model kept with the index (e.g. ``score_normalized``).
        """
        import faiss

        path = Path(path)
        if (path / CATALOG).exists():
            raise IndexRequestError(f"{path}: an index exists already (use `index add`, or remove the directory)")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        path.mkdir(parents=True, exist_ok=True)
        with _writer_lock(path):
            _write_faiss(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), path, 0)
            db = sqlite3.connect(path / CATALOG, isolation_level=None)
            db.executescript(_SCHEMA)
            meta = {"format": FORMAT, "fingerprint": fingerprint, "dim": dim, "kind": "flat", "generation": 0,
                    "next_id": 0, "created": time.time(), "policy": json.dumps(policy.__dict__),
                    "attributes": attributes or {}}
            with _transaction(db):
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            db.close()
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> ReferenceStore:
        """Open an existing index at the generation its catalogue names.

        Raises:
            CorruptIndex: not an index, or its faiss file and catalogue disagree.
        """
        import faiss

        path = Path(path)
        if not (path / CATALOG).is_file():
            raise CorruptIndex(f"{path}: not an index directory (no {CATALOG}; create one with `index create`)")
        db = sqlite3.connect(f"file:{path / CATALOG}?mode=rw", uri=True, isolation_level=None)
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        if meta.get("format") != FORMAT:
            raise CorruptIndex(f"{path}: index format {meta.get('format')}, this version reads {FORMAT}")
        vectors = _faiss_path(path, meta["generation"])
        if not vectors.is_file():
            raise CorruptIndex(f"{path}: generation {meta['generation']} names {vectors.name}, which is missing")
        index = faiss.read_index(str(vectors))
        (rows,) = db.execute("SELECT COUNT(*) FROM rows").fetchone()
        if index.ntotal != rows or index.d != meta["dim"]:
            raise CorruptIndex(f"{path}: {vectors.name} holds {index.ntotal} vectors of dim {index.d}, "
                               f"the catalogue {rows} rows of dim {meta['dim']}")
        return cls(path, db, meta, index)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReferenceStore:  # noqa: PYI034 - a final class in practice
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts -----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def attributes(self) -> dict:
        return dict(self.meta.get("attributes", {}))

    @property
    def policy(self) -> IndexPolicy:
        return IndexPolicy(**json.loads(self.meta["policy"]))

    def video_ids(self) -> list[str]:
        return [v for (v,) in self._db.execute("SELECT video_id FROM videos ORDER BY video_id")]

    def info(self) -> dict[str, Any]:
        """What the index holds and how it searches."""
        (videos,) = self._db.execute("SELECT COUNT(*) FROM videos").fetchone()
        out = {"path": str(self.path), "videos": videos, "descriptors": int(self.index.ntotal), "dim": self.dim,
               "fingerprint": self.fingerprint, "kind": self.meta["kind"], "generation": self.meta["generation"],
               "faiss_file_bytes": _faiss_path(self.path, self.meta["generation"]).stat().st_size}
        if self.meta["kind"] != "flat":
            out |= {"nlist": int(self.index.nlist), "nprobe": int(self.meta.get("nprobe", self.index.nprobe))}
        return out

    # -- writes ----------------------------------------------------------------------------

    def add(self, videos: Sequence[VideoDescriptors], fingerprint: str) -> tuple[list[str], list[str]]:
        """Add reference videos (one atomic generation; Note [Atomic generations]).

        Args:
            videos: their descriptors (reference role, the index's dim).
            fingerprint: the model fingerprint they were made with.

        Returns:
            (ids added, ids skipped because the index holds them already).

        Raises:
            FingerprintMismatch: ``fingerprint`` is not the index's.
            IndexRequestError: a dim that is not the index's.
        """
        if fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"{self.path}: refusing descriptors of model fingerprint {fingerprint}; this index holds {self.fingerprint} "
                f"(extract the videos with the index's model and settings, or create another index)")
        with self._writing():
            present = set(self.video_ids())
            new = [v for v in videos if v.video_id not in present]
            skipped = [v.video_id for v in videos if v.video_id in present]
            if len({v.video_id for v in new}) != len(new):
                raise IndexRequestError("the same video id is given twice")
            for v in new:
                if v.dim != self.dim:
                    raise IndexRequestError(f"{v.video_id}: {v.dim}-d descriptors, the index holds {self.dim}-d")
            next_id = int(self.meta["next_id"])
            counts = [len(v) for v in new]
            ids = np.arange(next_id, next_id + sum(counts), dtype=np.int64)
            if len(ids):
                features = np.ascontiguousarray(np.concatenate([v.features for v in new]), dtype=np.float32)
                self._grow(features, ids)
            rows, video_rows, start = [], [], next_id
            now = time.time()
            for v, n in zip(new, counts):
                ts = np.asarray(v.timestamps, dtype=np.float32)
                video_rows.append((v.video_id, now, n, np.asarray(v.features, np.float32).tobytes(), ts.tobytes()))
                rows.extend((start + i, v.video_id, float(ts[i, 0]), float(ts[i, 1])) for i in range(n))
                start += n
            self._commit(lambda db: (
                db.executemany("INSERT INTO videos VALUES (?, ?, ?, ?, ?)", video_rows),
                db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?)", rows),
            ), next_id=next_id + len(ids))
        return [v.video_id for v in new], skipped

    def remove(self, video_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Remove videos (one atomic generation). Returns (ids removed, ids not in the index)."""
        import faiss

        with self._writing():
            present = set(self.video_ids())
            gone = sorted({v for v in video_ids if v in present})
            missing = sorted({v for v in video_ids if v not in present})
            if gone:
                marks = ",".join("?" * len(gone))
                ids = np.array([i for (i,) in self._db.execute(f"SELECT id FROM rows WHERE video_id IN ({marks})", gone)], np.int64)
                if len(ids):
                    removed = self.index.remove_ids(faiss.IDSelectorBatch(ids))
                    if removed != len(ids):
                        raise CorruptIndex(f"{self.path}: faiss removed {removed} of {len(ids)} rows of {gone}")
                self._commit(lambda db: (
                    db.execute(f"DELETE FROM rows WHERE video_id IN ({marks})", gone),
                    db.execute(f"DELETE FROM videos WHERE video_id IN ({marks})", gone),
                ))
        return gone, missing

    def _grow(self, features: np.ndarray, ids: np.ndarray) -> None:
        policy = self.policy
        if self.meta["kind"] == "flat" and self.index.ntotal + len(ids) > policy.flat_max_rows:
            import faiss

            old_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            old = self.index.index.reconstruct_n(0, self.index.ntotal) if self.index.ntotal else np.zeros((0, self.dim), np.float32)
            all_features, all_ids = np.concatenate([old, features]), np.concatenate([old_ids, ids])
            self.index = train_ivf(all_features, policy, self.dim)
            self.meta["kind"] = policy.approximate
            self.meta["nprobe"] = int(self.index.nprobe)
            logger.info("%s: %d descriptors > %d: switched to %s (nlist %d, nprobe %d)", self.path, len(all_ids),
                        policy.flat_max_rows, policy.approximate, self.index.nlist, self.index.nprobe)
            self.index.add_with_ids(all_features, all_ids)
        else:
            self.index.add_with_ids(features, ids)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with _writer_lock(self.path):
            # Another writer may have committed since this store was opened: start from its generation.
            (on_disk,) = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            if json.loads(on_disk) != self.meta["generation"]:
                self._reload()
            _remove_orphans(self.path, self.meta["generation"])
            try:
                yield
            except BaseException:
                self._reload()  # drop the uncommitted in-memory change
                raise

    def _reload(self) -> None:
        fresh = ReferenceStore.open(self.path)
        self._db.close()
        self._db, self.meta, self.index, self._rows = fresh._db, fresh.meta, fresh.index, None

    def _commit(self, statements, next_id: int | None = None) -> None:
        generation = int(self.meta["generation"]) + 1
        _write_faiss(self.index, self.path, generation)
        updates = {"generation": generation, "kind": self.meta["kind"]}
        if next_id is not None:
            updates["next_id"] = next_id
        if "nprobe" in self.meta:
            updates["nprobe"] = self.meta["nprobe"]
        with _transaction(self._db):
            statements(self._db)
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in updates.items()])
        self.meta.update(updates)
        self._rows = None
        _remove_orphans(self.path, generation)

    # -- reads -----------------------------------------------------------------------------

    def _all_rows(self) -> _Rows:
        if self._rows is None:
            cursor = self._db.execute("SELECT id, video_id, start, end FROM rows ORDER BY id")
            ids, videos, starts, ends = [], [], [], []
            for i, v, s, e in cursor:
                ids.append(i), videos.append(v), starts.append(s), ends.append(e)
            video_ids = tuple(sorted(set(videos)))
            position = {v: i for i, v in enumerate(video_ids)}
            self._rows = _Rows(np.array(ids, np.int64), np.array([position[v] for v in videos], np.int64),
                               np.stack([np.array(starts, np.float32), np.array(ends, np.float32)], axis=1).reshape(-1, 2),
                               video_ids)
        return self._rows

    def knn(self, query: VideoDescriptors, k: int, nprobe: int | None = None) -> FramePairs:
        """The k nearest reference descriptors of every descriptor of one query video.

        Args:
            query: one query video (descriptors with the index's dim).
            k: neighbours per query descriptor (fewer where the index has fewer).
            nprobe: IVF cells to visit (default: the index's setting); ignored by the flat index.

        Returns:
            FramePairs sorted by score descending (see ``runtime.search.index``).
        """
        if query.dim != self.dim:
            raise IndexRequestError(f"{query.video_id}: {query.dim}-d query descriptors, the index holds {self.dim}-d")
        rows = self._all_rows()
        k = min(k, int(self.index.ntotal))
        if k < 1 or len(query) == 0:
            return FramePairs.empty((query.video_id,), rows.video_ids)
        if self.meta["kind"] != "flat":
            self.index.nprobe = int(nprobe or self.meta.get("nprobe", self.index.nprobe))
        scores, ids = self.index.search(np.ascontiguousarray(query.features, dtype=np.float32), k)
        query_rows = np.repeat(np.arange(len(query), dtype=np.int64), k)
        ids, scores = ids.reshape(-1), scores.reshape(-1)
        keep = ids >= 0  # IVF returns -1 where the visited cells held fewer than k vectors
        query_rows, ids, scores = query_rows[keep], ids[keep], scores[keep]
        positions = np.searchsorted(rows.ids, ids)
        order = np.argsort(-scores, kind="stable")
        query_rows, positions, scores = query_rows[order], positions[order], scores[order]
        return FramePairs(
            query_ids=(query.video_id,), ref_ids=rows.video_ids,
            query_video=np.zeros(len(scores), np.int64), ref_video=rows.video[positions],
            query_timestamps=np.asarray(query.timestamps, np.float32)[query_rows], ref_timestamps=rows.timestamps[positions],
            scores=scores.astype(np.float32, copy=False),
        )

    def load_videos(self, video_ids: Sequence[str]) -> list[VideoDescriptors]:
        """The exact stored descriptors of some videos (e.g. the candidates to localise)."""
        out = []
        for video_id in video_ids:
            row = self._db.execute("SELECT num_rows, features, timestamps FROM videos WHERE video_id = ?", (video_id,)).fetchone()
            if row is None:
                raise IndexRequestError(f"{video_id}: not in the index {self.path}")
            n, features, timestamps = row
            out.append(VideoDescriptors(video_id, np.frombuffer(timestamps, np.float32).reshape(n, 2).copy(),
                                        np.frombuffer(features, np.float32).reshape(n, self.dim).copy()))
        return out


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE videos (video_id TEXT PRIMARY KEY, added_at REAL NOT NULL, num_rows INTEGER NOT NULL,
                     features BLOB NOT NULL, timestamps BLOB NOT NULL);
CREATE TABLE rows (id INTEGER PRIMARY KEY, video_id TEXT NOT NULL REFERENCES videos(video_id), start REAL NOT NULL, end REAL NOT NULL);
CREATE INDEX rows_by_video ON rows(video_id);
PRAGMA journal_mode = WAL;
"""


def _faiss_path(path: Path, generation: int) -> Path:
    return path / f"vectors.{generation}.faiss"


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    with open(path / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_faiss(index: Any, path: Path, generation: int) -> None:
    """Write one generation's faiss file durably under its final name (temp + fsync + rename)."""
    import faiss

    final = _faiss_path(path, generation)
    tmp = final.with_name(final.name + ".tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(path)


def _remove_orphans(path: Path, generation: int) -> None:
    """Delete faiss files of other generations and temp files (called with the writer lock held)."""
    for stale in path.glob("vectors.*.faiss*"):
        if stale.name != _faiss_path(path, generation).name:
            stale.unlink(missing_ok=True)


def train_ivf(features: np.ndarray, policy: IndexPolicy, dim: int) -> Any:
    """An empty IVF index of the policy's kind, its quantiser trained on ``features`` (GPU k-means when available)."""
    import faiss

    nlist = min(policy.cells(len(features)), max(1, len(features) // 39))  # faiss wants >= 39 points per cell
    quantizer = faiss.IndexFlatIP(dim)
    if policy.approximate == "ivfpq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(dim, policy.pq_m), 8, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if faiss.get_num_gpus() > 0 and hasattr(faiss, "index_cpu_to_all_gpus"):
        index.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
    sample = features
    if len(features) > 64 * nlist:  # k-means on 64 points per cell (faiss asks for >= 39), drawn reproducibly
        sample = features[np.sort(np.random.default_rng(0).choice(len(features), 64 * nlist, replace=False))]
    index.cp.niter = 10  # faiss' k-means converges well before its default 25 on descriptors like ours
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.quantizer_trains_alone = 0
    index.nprobe = min(nlist, policy.nprobe or max(1, nlist // 16))
    return index
