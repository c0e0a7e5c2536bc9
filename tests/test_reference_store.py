"""The persistent reference index: add/remove equal a fresh index, fingerprints are enforced, kill -9 never breaks it.

Oracles: a fresh index of the surviving videos, and a numpy brute-force kNN.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.io.descriptors import VideoDescriptors, save_descriptors
from runtime.search.persistent import (
    CorruptIndex,
    FingerprintMismatch,
    IndexPolicy,
    ReferenceStore,
)

REPO = Path(__file__).resolve().parents[1]
FP = "0123456789abcdef"


def _videos(seed: int, count: int, dim: int, prefix: str = "R") -> list[VideoDescriptors]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = int(rng.integers(1, 7))
        features = rng.standard_normal((n, dim)).astype(np.float32)
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        starts = np.arange(n, dtype=np.float32)
        out.append(VideoDescriptors(f"{prefix}{i:03d}", np.stack([starts, starts + 1], axis=1), features))
    return out


def _results(store: ReferenceStore, queries: list[VideoDescriptors], k: int) -> list[list[tuple]]:
    out = []
    for q in queries:
        pairs = store.knn(q, k)
        out.append(sorted(zip(pairs.query_timestamps[:, 0].tolist(), [pairs.ref_ids[i] for i in pairs.ref_video],
                              pairs.ref_timestamps[:, 0].tolist(), pairs.scores.tolist())))
    return out


def _same(a: list[list[tuple]], b: list[list[tuple]]) -> bool:
    """Same (query row, reference video, reference row) hits; scores equal up to float32 rounding."""
    return all([r[:3] for r in x] == [r[:3] for r in y] and np.allclose([r[3] for r in x], [r[3] for r in y], atol=1e-5)
               for x, y in zip(a, b, strict=True))


def _brute_force(refs: list[VideoDescriptors], queries: list[VideoDescriptors], k: int) -> list[list[tuple]]:
    if not refs:
        return [[] for _ in queries]
    feats = np.concatenate([r.features for r in refs]).astype(np.float64)
    owner = [(r.video_id, float(t)) for r in refs for t in r.timestamps[:, 0]]
    out = []
    for q in queries:
        rows = []
        for qi, row in enumerate(q.features.astype(np.float64)):
            sims = feats @ row
            for j in np.argsort(-sims, kind="stable")[: min(k, len(feats))]:
                rows.append((float(q.timestamps[qi, 0]), owner[j][0], owner[j][1], float(sims[j])))
        out.append(sorted(rows))
    return out


ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.lists(st.integers(0, 7), min_size=1, max_size=3)), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), operations=ops, flat_max_rows=st.sampled_from([0, 10, 1000]), k=st.integers(1, 6))
def test_add_remove_sequences_equal_a_fresh_index(seed, operations, flat_max_rows, k):
    dim = 8
    pool = _videos(seed, 8, dim)
    queries = _videos(seed + 1, 3, dim, prefix="Q")
    # nprobe >= nlist: IVF visits every cell, so flat and IVF must agree exactly.
    policy = IndexPolicy(flat_max_rows=flat_max_rows, nprobe=1 << 16)
    present: dict[str, VideoDescriptors] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = ReferenceStore.create(Path(tmp) / "grown", FP, dim, policy)
        for op, picks in operations:
            chosen = [pool[i] for i in dict.fromkeys(picks)]
            if op == "add":
                added, skipped = store.add(chosen, FP)
                assert sorted(added) == sorted(v.video_id for v in chosen if v.video_id not in present)
                assert sorted(skipped) == sorted(v.video_id for v in chosen if v.video_id in present)
                present |= {v.video_id: v for v in chosen}
            else:
                removed, _ = store.remove([v.video_id for v in chosen])
                assert sorted(removed) == sorted(v.video_id for v in chosen if v.video_id in present)
                for v in chosen:
                    present.pop(v.video_id, None)
        store.close()
        survivors = sorted(present.values(), key=lambda v: v.video_id)
        grown = ReferenceStore.open(Path(tmp) / "grown")  # what is on disk, not what is in memory
        fresh = ReferenceStore.create(Path(tmp) / "fresh", FP, dim, IndexPolicy(flat_max_rows=1 << 30))
        fresh.add(survivors, FP)
        assert grown.video_ids() == [v.video_id for v in survivors]
        assert grown.info()["descriptors"] == sum(len(v) for v in survivors)
        expected = _brute_force(survivors, queries, k)
        got, again = _results(grown, queries, k), _results(fresh, queries, k)
        assert _same(got, expected) and _same(again, expected)
        assert [[r[:3] for r in x] for x in got] == [[r[:3] for r in x] for x in again]
        for v, stored in zip(survivors, grown.load_videos([v.video_id for v in survivors])):
            assert np.array_equal(v.features, stored.features) and np.array_equal(v.timestamps, stored.timestamps)
        grown.close()
        fresh.close()


def test_fingerprint_and_dim_mismatches_are_refused(tmp_path):
    store = ReferenceStore.create(tmp_path / "idx", FP, 8)
    store.add(_videos(0, 2, 8), FP)
    with pytest.raises(FingerprintMismatch, match="refusing descriptors of model fingerprint ffffffffffffffff; this index holds 0123456789abcdef"):
        store.add(_videos(1, 2, 8, prefix="S"), "ffffffffffffffff")
    with pytest.raises(ValueError, match="S000: 4-d descriptors, the index holds 8-d"):
        store.add(_videos(1, 1, 4, prefix="S"), FP)
    assert store.info()["videos"] == 2 and ReferenceStore.open(tmp_path / "idx").info()["generation"] == 1
    with pytest.raises(CorruptIndex, match="not an index directory"):
        ReferenceStore.open(tmp_path / "nothing")


def test_switches_to_ivf_past_the_threshold_and_keeps_ids(tmp_path):
    rng = np.random.default_rng(3)
    dim, videos = 16, []
    for i in range(40):
        f = rng.standard_normal((50, dim)).astype(np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        videos.append(VideoDescriptors(f"R{i:03d}", np.stack([np.arange(50), np.arange(1, 51)], 1).astype(np.float32), f))
    store = ReferenceStore.create(tmp_path / "idx", FP, dim, IndexPolicy(flat_max_rows=1000, nlist=16, nprobe=4))
    store.add(videos[:10], FP)
    assert store.info()["kind"] == "flat"
    store.add(videos[10:], FP)
    info = ReferenceStore.open(tmp_path / "idx").info()
    assert (info["kind"], info["nlist"], info["nprobe"], info["descriptors"]) == ("ivf", 16, 4, 2000)
    # An exact copy of a stored descriptor finds itself first.
    pairs = store.knn(VideoDescriptors("Q", videos[25].timestamps[:3], videos[25].features[:3]), 1)
    assert [pairs.ref_ids[i] for i in pairs.ref_video] == ["R025"] * 3


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {repo!r})
from runtime.io.descriptors import VideoDescriptors
from runtime.search.persistent import ReferenceStore
store = ReferenceStore.open({path!r})
rng = np.random.default_rng({seed})
videos = [VideoDescriptors(f"B{seed}_{{i}}", np.zeros((20000, 2), np.float32), rng.standard_normal((20000, 32)).astype(np.float32)) for i in range(4)]
print("ready", flush=True)
store.add(videos, {fp!r})
print("done", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6])
def test_kill_9_during_add_leaves_the_index_before_or_after(tmp_path, delay):
    import time

    path = tmp_path / "idx"
    store = ReferenceStore.create(path, FP, 32)
    store.add(_videos(0, 3, 32), FP)
    before = store.info()
    store.close()
    with subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=str(REPO), path=str(path), seed=7, fp=FP)],
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
    after = ReferenceStore.open(path)
    info = after.info()
    assert (info["videos"], info["descriptors"]) in {(before["videos"], before["descriptors"]), (7, before["descriptors"] + 80000)}
    assert after.knn(_videos(5, 1, 32, prefix="Q")[0], 3).scores.shape[0] > 0
    # The index stays writable: the dead writer's lock is gone and its orphan files are cleaned up.
    after.add(_videos(9, 1, 32, prefix="C"), FP)
    assert ReferenceStore.open(path).info()["videos"] == info["videos"] + 1
    assert sorted(p.name for p in path.glob("vectors.*")) == [f"vectors.{info['generation'] + 1}.faiss"]


def test_cli_index_commands_on_descriptor_files(tmp_path, capsys):
    from runtime.cli import main

    refs, queries = _videos(0, 4, 8), _videos(0, 1, 8, prefix="Q")
    queries = [VideoDescriptors("Q000", refs[2].timestamps, refs[2].features)]  # a copy of R002
    for name, videos, role in (("refs", refs, "reference"), ("queries", queries, "query")):
        save_descriptors(tmp_path / f"{name}.npz", videos)
        (tmp_path / f"{name}.fingerprint.json").write_text(json.dumps({"fingerprint": FP, "role": role, "dim": 8}))
    idx = str(tmp_path / "idx")
    assert main(["index", "add", idx, str(tmp_path / "refs.npz"), "--create"]) == 0
    assert main(["index", "search", idx, str(tmp_path / "queries.npz"), "--out", str(tmp_path / "res.json")]) == 0
    result = json.loads((tmp_path / "res.json").read_text())
    assert result["candidates"][0] == {"query_id": "Q000", "ref_id": "R002", "score": pytest.approx(1.0, abs=1e-5)}
    assert main(["index", "remove", idx, "R002"]) == 0
    assert main(["index", "search", idx, str(tmp_path / "queries.npz"), "--out", str(tmp_path / "res.csv")]) == 0
    assert "R002" not in (tmp_path / "res.csv").read_text()
    capsys.readouterr()
    assert main(["index", "info", idx]) == 0
    assert json.loads(capsys.readouterr().out)["videos"] == 3
    (tmp_path / "refs.fingerprint.json").write_text(json.dumps({"fingerprint": "ffffffffffffffff", "role": "reference"}))
    assert main(["index", "add", idx, str(tmp_path / "refs.npz")]) == 2
    assert "refusing descriptors of model fingerprint ffffffffffffffff" in capsys.readouterr().err
