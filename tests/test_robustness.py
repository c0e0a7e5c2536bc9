"""Broken and hostile inputs, crash-safe resume and bounded memory, through the real CLI and model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.io.descriptors import load_descriptors, validate_descriptor_file
from tests.bad_inputs import CORPUS
from tests.video_factory import write_video

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _write_layout(root: Path, ids: list[str], durations: dict[str, float], subset_extra: str = "") -> Path:
    (root / "query").mkdir(parents=True, exist_ok=True)
    (root / "query_subset.csv").write_text("video_id\n" + "".join(f"{i}\n" for i in ids) + subset_extra)
    rows = "".join(f"{i},{d},10.0,64,48\n" for i, d in durations.items())
    (root / "query_metadata.csv").write_text("video_id,duration_sec,frames_per_second,width,height\n" + rows)
    return root


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "query").mkdir()
    for video_id, (make, _) in CORPUS.items():
        make(root / "query" / f"{video_id}.mp4")
    write_video(root / "query" / "Q000014.mp4", num_frames=40, fps=10)  # 4 s, metadata says 2 s
    durations = {i: 5.0 for i in CORPUS} | {"Q000007": 600.0, "Q000014": 2.0, "Q000099": 3.0}
    del durations["Q000012"]  # an id without metadata: budget from the decoded duration
    ids = [*CORPUS, "Q000014", "Q000099", "Q000003"]  # Q000099 has no file; Q000003 listed twice
    return _write_layout(root, ids, durations)


@pytest.fixture(scope="module")
def corpus_run(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code = main(["--data-dir", str(corpus_dir), "--output-dir", str(out), "--no-progress", "--device", "cpu"])
    return code, out


def _check_every_video_has_descriptors_or_an_error(out: Path) -> None:
    got = {v.video_id: v for v in load_descriptors(out / "subset_query_descriptors.npz")}
    errors = {e["video_id"]: e for e in json.loads((out / "errors.json").read_text())}
    expected_ok = {i for i, (_, ok) in CORPUS.items() if ok} | {"Q000014"}
    expected_fail = {i for i, (_, ok) in CORPUS.items() if not ok} | {"Q000099"}
    assert set(got) == expected_ok
    assert set(errors) == expected_fail
    assert not set(got) & set(errors)
    for e in errors.values():
        assert e["stage"] == "decode" and e["message"] and e["error_type"] == "DecodeError"
    assert "no such file" in errors["Q000099"]["message"]
    assert "empty file" in errors["Q000001"]["message"]
    assert "no video stream" in errors["Q000004"]["message"]


def test_every_video_has_descriptors_or_an_error(corpus_run):
    code, out = corpus_run
    assert code == 0
    _check_every_video_has_descriptors_or_an_error(out)


@pytest.mark.gpu
def test_corpus_through_the_gpu_path(corpus_dir, tmp_path):
    """The same corpus through NVDEC + TensorRT: fallbacks and failures stay per video."""
    code = main(["--data-dir", str(corpus_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "gpu"])
    assert code == 0
    _check_every_video_has_descriptors_or_an_error(tmp_path)


def test_budget_follows_metadata(corpus_run):
    _, out = corpus_run
    got = {v.video_id: v for v in load_descriptors(out / "subset_query_descriptors.npz")}
    assert len(got["Q000014"]) <= 2  # metadata (2 s) wins over the file (4 s)
    assert len(got["Q000006"]) == 1
    assert 1 <= len(got["Q000007"]) <= 600
    assert got["Q000012"].timestamps[-1, 1] <= 5.0


def test_output_is_valid_for_the_challenge(corpus_run, corpus_dir):
    _, out = corpus_run
    durations = {i: 600.0 for i in [*CORPUS, "Q000014"]}
    validate_descriptor_file(out / "subset_query_descriptors.npz", durations)


def test_strict_mode_exit_code(corpus_dir, corpus_run, tmp_path):
    _, out = corpus_run
    # Reusing the finished work dir makes this a resume: nothing is recomputed.
    code = main(["--data-dir", str(corpus_dir), "--output-dir", str(out), "--no-progress", "--device", "cpu", "--strict"])
    assert code == 3


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "query_subset.csv").write_text(""), "empty CSV"),
        (lambda d: (d / "query_subset.csv").write_text("id\nQ1\n"), "missing columns"),
        (lambda d: (d / "query_subset.csv").write_text("video_id\n"), "no query videos listed"),
    ],
)
def test_unusable_input_exits_2(tmp_path, caplog, setup, message):
    root = _write_layout(tmp_path / "data", ["Q1"], {"Q1": 1.0})
    setup(root)
    code = main(["--data-dir", str(root), "--output-dir", str(tmp_path / "o"), "--no-progress", "--device", "cpu"])
    assert code == 2
    assert message in caplog.text


def _clean_videos(root: Path, count: int, frames: int = 60) -> Path:
    ids = [f"Q{100 + i:06d}" for i in range(count)]
    for n, video_id in enumerate(ids):
        write_video(root / "query" / f"{video_id}.mp4", num_frames=frames, fps=10, seed=n)
    return _write_layout(root, ids, {i: frames / 10 for i in ids})


def _cli(data: Path, out: Path) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), "--data-dir", str(data), "--output-dir", str(out), "--no-progress", "--device", "cpu"]


def test_kill_9_and_resume_gives_identical_output(tmp_path):
    data = _clean_videos(tmp_path / "data", 8, frames=120)
    reference_out, resumed_out = tmp_path / "ref", tmp_path / "resumed"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(data, reference_out), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_cli(data, resumed_out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = resumed_out / ".vcd-work" / "query" / "videos"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.is_dir() and len(list(done_dir.glob("*.npz"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make the videos longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(done_dir.glob("*.npz")))
    assert 2 <= finished_before < 8
    assert not (resumed_out / "subset_query_descriptors.npz").exists()

    rerun = subprocess.run(_cli(data, resumed_out), check=True, env=env, capture_output=True, text=True)
    assert f"{finished_before} of 8 videos already done" in rerun.stderr
    assert not list(resumed_out.rglob("*.tmp"))
    assert (resumed_out / "subset_query_descriptors.npz").read_bytes() == (reference_out / "subset_query_descriptors.npz").read_bytes()


def _peak_rss_kib(data: Path, out: Path) -> int:
    script = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *_cli(data, out)[1:]], check=True, capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    return int(done.stdout.strip().splitlines()[-1].split()[1])


def test_peak_memory_does_not_grow_with_the_number_of_videos(tmp_path):
    few = _peak_rss_kib(_clean_videos(tmp_path / "few", 3, frames=100), tmp_path / "o1")
    many = _peak_rss_kib(_clean_videos(tmp_path / "many", 24, frames=100), tmp_path / "o2")
    assert many - few < 40 * 1024, f"peak RSS grew from {few} KiB to {many} KiB"
