"""Extraction sharded over a local Ray cluster (2 CPUs) gives the bytes of the local run, also after worker deaths and interruptions.

The oracle is the local code-execution run (``runtime.cli.main``, its own loop over the
pipeline), on the embedded demo videos (the mini-VSC small set is not in CI).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from runtime.cli import main as cli_main
from runtime.demo import demo_data_dir
from runtime.distributed.driver import RayOptions, extract, worker_env
from runtime.distributed.sources import video_tasks_from
from runtime.distributed.store import read_provenance
from runtime.distributed.worker import Finished
from runtime.pipeline.extractor import ExtractorConfig

# Ray's own internals warn (deprecations, Popen objects of its daemons collected while running).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

CONFIG = ExtractorConfig(device="cpu")


@pytest.fixture(scope="module")
def cluster():
    kwargs = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False, "runtime_env": {"env_vars": worker_env()}}
    try:
        ray.init(**kwargs)
    except Exception as exc:
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        ray.init(**kwargs)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    """The demo's query split alone, laid out like the challenge's /data."""
    root = tmp_path_factory.mktemp("data")
    demo = demo_data_dir()
    (root / "query").symlink_to(demo / "query")
    for name in ("query_metadata.csv", "query_subset.csv"):
        (root / name).write_bytes((demo / name).read_bytes())
    return root


@pytest.fixture(scope="module")
def local_npz(queries, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("local")
    assert cli_main(["--data-dir", str(queries), "--output-dir", str(out), "--no-progress", "--device", "cpu"]) == 0
    return (out / "subset_query_descriptors.npz").read_bytes()


def _descendants_named(name: str) -> list[int]:
    """Pids of this process's descendants whose command line starts with ``name`` (the Ray workers we started)."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdlines[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    me = os.getpid()

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    return [pid for pid, cmd in cmdlines.items() if cmd.startswith(name) and ours(pid)]


def test_ray_and_local_extract_give_the_local_bytes(cluster, queries, local_npz, tmp_path):
    tasks = video_tasks_from(queries / "query")
    assert [t.video_id for t in tasks] == [f"Q20000{i}" for i in range(6)] and all(t.duration for t in tasks)
    report = extract(tasks, tmp_path / "ray", CONFIG, "query", RayOptions(chunk_size=2), merge=tmp_path / "ray.npz", progress=False)
    assert (report.workers, report.succeeded, report.failures) == (2, 6, [])
    assert (tmp_path / "ray.npz").read_bytes() == local_npz
    assert read_provenance(tmp_path / "ray.npz") == {"fingerprint": report.fingerprint, "role": "query", "dim": 129, "score_normalized": True}
    assert read_provenance(tmp_path / "ray")["fingerprint"] == report.fingerprint
    # `vcd-runtime extract` without --ray: the same code path in this process, the same bytes.
    assert cli_main(["extract", "--videos", str(queries / "query"), "--out", str(tmp_path / "local"), "--role", "query",
                     "--merge", str(tmp_path / "local.npz"), "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "local.npz").read_bytes() == local_npz
    assert read_provenance(tmp_path / "local")["fingerprint"] == report.fingerprint
    # A rerun on the Ray store has nothing left to do.
    again = extract(tasks, tmp_path / "ray", CONFIG, "query", RayOptions(), merge=tmp_path / "again.npz", progress=False)
    assert again.already_done == 6 and (tmp_path / "again.npz").read_bytes() == local_npz


def test_killed_worker_and_interrupted_driver_then_rerun_give_the_same_bytes(cluster, queries, local_npz, tmp_path):
    tasks = video_tasks_from(queries / "query")
    seen: list[str] = []
    killed: list[int] = []

    def kill_then_interrupt(outcome) -> None:
        assert isinstance(outcome, Finished), outcome
        seen.append(outcome.video_id)
        if len(seen) == 1:  # mid-run: the other worker holds a chunk
            pids = _descendants_named("ray::ExtractionWorker")
            assert pids, "no Ray extraction worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        if len(seen) == 4:
            raise KeyboardInterrupt  # the driver dies with work in flight

    store = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        extract(tasks, store, CONFIG, "query", RayOptions(chunk_size=1), progress=False, on_result=kill_then_interrupt)
    assert killed and len(seen) == 4  # three videos finished after the kill: the run went on without that worker
    report = extract(tasks, store, CONFIG, "query", RayOptions(chunk_size=1), merge=tmp_path / "out.npz", progress=False)
    assert report.already_done == 4 and report.succeeded == 6 and report.failures == []
    assert (tmp_path / "out.npz").read_bytes() == local_npz
