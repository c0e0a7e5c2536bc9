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
from tests.bad_inputs import CORPUS, DESCRIPTORS, NO_ROWS
from tests.video_factory import write_video

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _write_layout(root: Path, ids: list[str], durations: dict[str, float], subset_extra: str = "") -> Path:
    (root / "query").mkdir(parents=True, exist_ok=True)
    (root / "query_subset.csv").write_text("video_id\n" + "".join(f"{i}\n" for i in ids) + subset_extra)
    rows = "".join(f"{i},{d},10.0,64,48\n" for i, d in durations.items())
    (root / "query_metadata.csv").write_text("video_id,duration_sec,frames_per_second,width,height\n" + rows)
    return root


def _write_hostile_csvs(root: Path, ids: list[str], durations: dict[str, float]) -> None:
    """CSV kinds: a byte-order mark, CRLF line ends, extra columns, a duplicate metadata id with a
    conflicting duration (the first row wins) and a subset id listed twice."""
    subset = ["video_id", *ids, ids[2]]
    (root / "query_subset.csv").write_bytes(("\ufeff" + "\r\n".join(subset) + "\r\n").encode())
    rows = [f"{i},{d},10.0,64,48,extra-{n}" for n, (i, d) in enumerate(durations.items())]
    rows.append("Q000014,600.0,10.0,64,48,conflicting duplicate")
    header = "video_id,duration_sec,frames_per_second,width,height,notes"
    (root / "query_metadata.csv").write_bytes(("\ufeff" + "\r\n".join([header, *rows]) + "\r\n").encode())


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "query").mkdir()
    for video_id, kind in CORPUS.items():
        if kind.make is not None:
            kind.make(root / "query" / f"{video_id}.mp4")
    durations = {i: k.duration for i, k in CORPUS.items() if k.duration is not None}
    _write_hostile_csvs(root, list(CORPUS), durations)
    yield root
    (root / "query" / "Q000026.mp4").chmod(0o644)  # let pytest clean up


@pytest.fixture(scope="module")
def corpus_run(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code = main(["--data-dir", str(corpus_dir), "--output-dir", str(out), "--no-progress", "--device", "cpu"])
    return code, out


def _outcomes(out: Path) -> tuple[dict, dict]:
    got = {v.video_id: v for v in load_descriptors(out / "subset_query_descriptors.npz")}
    errors = {e["video_id"]: e for e in json.loads((out / "errors.json").read_text())}
    return got, errors


def _check_every_video_has_descriptors_or_an_error(out: Path) -> None:
    got, errors = _outcomes(out)
    assert len(CORPUS) >= 30
    assert set(got) == {i for i, k in CORPUS.items() if k.expect == DESCRIPTORS}  # no good video lost
    assert set(errors) == {i for i, k in CORPUS.items() if k.is_error}
    assert not set(got) & set(errors)
    for video_id, kind in CORPUS.items():
        if kind.is_error:
            e = errors[video_id]
            assert (e["stage"], e["error_type"]) == (kind.stage, "InputError" if kind.stage == "input" else "DecodeError"), e
            assert kind.expect in e["message"], e
        elif kind.expect == NO_ROWS:
            assert video_id not in got and video_id not in errors


def test_every_video_has_descriptors_or_an_error(corpus_run):
    code, out = corpus_run
    assert code == 0
    _check_every_video_has_descriptors_or_an_error(out)


def test_raw_h264_is_timed_at_its_own_frame_rate(corpus_dir, corpus_run):
    """20 frames at 10 fps span 2 s: samples must not claim 0.8 s (25 fps) or 20 s (1 s per frame)."""
    from runtime.decode.pyav import PyAVDecoder
    from runtime.preprocess.config import PreprocessConfig
    from runtime.sampling import SamplingPolicy

    decoded = PyAVDecoder(thread_count=1).decode(corpus_dir / "query" / "Q000015.mp4", SamplingPolicy(fps=2.0), PreprocessConfig(height=32, width=32))
    assert decoded.intervals[-1, 1] == pytest.approx(2.0, abs=1e-6)
    assert len(decoded.intervals) == 4
    got, _ = _outcomes(corpus_run[1])
    assert got["Q000015"].timestamps[-1, 1] <= 2.0 + 1e-6  # the descriptors keep those times


@pytest.mark.gpu
@pytest.mark.parametrize("engine", [pytest.param("trt", marks=pytest.mark.tensorrt), "torch"])
def test_corpus_through_the_gpu_path(corpus_dir, tmp_path, engine):
    """The same corpus through NVDEC + TensorRT or PyTorch: fallbacks and failures stay per video."""
    from gpu_support import require_gpu

    require_gpu(("pycuda", "PyNvVideoCodec", "tensorrt" if engine == "trt" else "torch"))
    code = main(["--data-dir", str(corpus_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "gpu", "--engine", engine])
    assert code == 0
    _check_every_video_has_descriptors_or_an_error(tmp_path)


def test_budget_follows_metadata(corpus_run):
    _, out = corpus_run
    got, _ = _outcomes(out)
    assert len(got["Q000014"]) <= 2  # metadata (2 s; its conflicting duplicate row says 600 s) wins over the file (4 s)
    assert len(got["Q000006"]) == 1
    assert 1 <= len(got["Q000007"]) <= 600
    assert len(got["Q000012"]) <= 5 and got["Q000012"].timestamps[-1, 1] <= 5.0  # decoded: 4.1 s
    assert len(got["Q000032"]) == 1  # no metadata, a 0.1 s file


def test_output_is_valid_for_the_challenge(corpus_run):
    _, out = corpus_run
    durations = {i: 600.0 for i in CORPUS}
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


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"\xef\xbb\xbfvideo_id,duration_sec\nQ1,2.5\n", {"Q1": 2.5}),  # byte-order mark
        (b"video_id,duration_sec\r\nQ1,2.5\r\nQ2,3\r\n", {"Q1": 2.5, "Q2": 3.0}),  # CRLF
        (b"rn,video_id,extra,duration_sec\n7,Q1,x,2.5\n", {"Q1": 2.5}),  # extra columns, any order
        (b"video_id,duration_sec\nQ1,2.5\nQ1,99\n", {"Q1": 2.5}),  # duplicate id: first row wins
        (b"video_id, duration_sec\n Q1 , 0\nQ2,-1\nQ3,abc\nQ4,inf\n", {"Q1": 0.0, "Q2": None, "Q3": None, "Q4": None}),
    ],
)
def test_metadata_csv_variants(tmp_path, raw, expected):
    from runtime.io.dataset import read_metadata

    (tmp_path / "m.csv").write_bytes(raw)
    assert read_metadata(tmp_path / "m.csv") == expected


def test_subset_csv_variants(tmp_path):
    from runtime.io.dataset import read_video_ids

    (tmp_path / "s.csv").write_bytes(b"\xef\xbb\xbfvideo_id\r\nQ2\r\nQ1\r\nQ2\r\n\r\n Q3 \r\n")
    assert read_video_ids(tmp_path / "s.csv") == ["Q2", "Q1", "Q3"]
