"""The code-execution entry point on a directory laid out like the challenge's /data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.evaluation.matching_track import evaluate_matching_track
from runtime.io.descriptors import load_descriptors, validate_descriptor_file
from runtime.io.matches import read_matches_csv
from tests.video_factory import moving_pattern, write_video

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Two references; Q1 is a copy of R1 (same frames), Q2 unrelated. Content changes every 0.5 s."""
    root = tmp_path_factory.mktemp("data")

    def shots(seed: int, n: int) -> list:
        return [moving_pattern(i, 48, 64, seed=1000 * seed + i // 5) for i in range(n)]

    write_video(root / "reference" / "R1.mp4", frames=shots(1, 50), fps=10)
    write_video(root / "reference" / "R2.mp4", frames=shots(2, 50), fps=10)
    write_video(root / "query" / "Q1.mp4", frames=shots(1, 50), fps=10)
    write_video(root / "query" / "Q2.mp4", frames=shots(3, 40), fps=10)
    (root / "query_subset.csv").write_text("video_id\nQ2\nQ1\n")
    (root / "query_metadata.csv").write_text("video_id,duration_sec\nQ1,5.0\nQ2,4.0\n")
    (root / "reference_metadata.csv").write_text("video_id,duration_sec\nR1,5.0\nR2,5.0\n")
    (root / "matching_ground_truth.csv").write_text("query_id,ref_id,query_start,query_end,ref_start,ref_end\nQ1,R1,0,5,0,5\n")
    return root


def test_descriptor_track_output_valid_and_deterministic(data_dir, tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        assert main(["--data-dir", str(data_dir), "--output-dir", str(out), "--no-progress", "--device", "cpu"]) == 0
    a, b = (tmp_path / d / "subset_query_descriptors.npz" for d in "ab")
    validate_descriptor_file(a, {"Q1": 5.0, "Q2": 4.0})
    assert a.read_bytes() == b.read_bytes()
    videos = {v.video_id: v for v in load_descriptors(a)}
    assert sorted(videos) == ["Q1", "Q2"] and 1 <= len(videos["Q1"]) <= 5 and 1 <= len(videos["Q2"]) <= 4
    assert videos["Q1"].dim <= 512
    assert not (tmp_path / "a" / "reference_descriptors.npz").exists()


def test_budget_is_filled_without_pruning(data_dir, tmp_path):
    """2 samples/s are extracted; the per-video cap ceil(duration) keeps the most novel ones."""
    args = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main([*args, "--duplicate-similarity", "1.0"]) == 0
    videos = {v.video_id: v for v in load_descriptors(tmp_path / "subset_query_descriptors.npz")}
    assert (len(videos["Q1"]), len(videos["Q2"])) == (5, 4)
    assert np.all(np.diff(videos["Q1"].timestamps[:, 0]) > 0)


def test_copy_scores_above_unrelated(data_dir, tmp_path):
    main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu", "--references"])
    queries = {v.video_id: v for v in load_descriptors(tmp_path / "subset_query_descriptors.npz")}
    refs = {v.video_id: v for v in load_descriptors(tmp_path / "reference_descriptors.npz")}
    best = {(q, r): float(np.max(queries[q].features @ refs[r].features.T)) for q in queries for r in refs}
    assert best[("Q1", "R1")] > max(v for k, v in best.items() if k != ("Q1", "R1"))


def test_matching_track_csv_is_scored(data_dir, tmp_path):
    code = main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu", "--track", "matching"])
    assert code == 0
    matches = read_matches_csv(tmp_path / "submission" / "subset_matches.csv")
    assert matches and matches[0].query_id == "Q1" and matches[0].ref_id == "R1"
    gt = read_matches_csv(data_dir / "matching_ground_truth.csv", is_ground_truth=True)
    assert evaluate_matching_track(matches, gt).ap > 0.5


def test_environment_overrides_and_gpu_request_without_gpu(data_dir, tmp_path):
    env = {"VCD_DATA_DIR": str(data_dir), "VCD_OUTPUT_DIR": str(tmp_path / "env-out"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "--no-progress", "--device", "cpu"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env-out" / "subset_query_descriptors.npz").is_file()
    gpu = subprocess.run([sys.executable, str(REPO / "main.py"), "--no-progress", "--device", "gpu"], env=env, capture_output=True, text=True)
    assert gpu.returncode in (0, 2)
    if gpu.returncode == 2:
        assert "GPU path is unavailable" in gpu.stderr


def test_postprocess_failure_is_recorded_per_video(data_dir, tmp_path, monkeypatch):
    import json

    from runtime.pipeline.extractor import Extractor

    original = Extractor.finalize

    def failing_for_q2(self, video, duration, role="query"):
        if video.video_id == "Q2":
            raise ValueError("injected postprocessing failure")
        return original(self, video, duration, role)

    monkeypatch.setattr(Extractor, "finalize", failing_for_q2)
    assert main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    errors = json.loads((tmp_path / "errors.json").read_text())
    assert [(e["video_id"], e["stage"], e["message"]) for e in errors] == [("Q2", "postprocess", "injected postprocessing failure")]
    assert [v.video_id for v in load_descriptors(tmp_path / "subset_query_descriptors.npz")] == ["Q1"]
