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
        assert "--device gpu requested but the GPU" in gpu.stderr and "unavailable" in gpu.stderr


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


def test_explicit_data_dir_that_does_not_exist_exits_2_naming_it(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "typo"
    assert main(["--data-dir", str(missing), "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert f"{missing}: data directory not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    monkeypatch.setenv("VCD_DATA_DIR", str(missing))
    assert main(["--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_demo_runs_only_without_any_data_dir(tmp_path, monkeypatch):
    from runtime import cli

    args = cli.build_parser().parse_args([])
    monkeypatch.setattr(cli, "DEFAULT_DATA_DIR", tmp_path / "absent")
    plan = cli.resolve_plan(args, environ={})
    assert plan.demo and not plan.challenge and plan.output_dir == cli.DEMO_OUTPUT_DIR
    present = tmp_path / "data"
    present.mkdir()
    monkeypatch.setattr(cli, "DEFAULT_DATA_DIR", present)
    plan = cli.resolve_plan(args, environ={})
    assert (plan.data_dir, plan.demo, plan.challenge, plan.output_dir) == (present, False, True, cli.DEFAULT_OUTPUT_DIR)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    plan = cli.resolve_plan(args, environ={"VCD_DATA_DIR": str(elsewhere), "VCD_OUTPUT_DIR": str(tmp_path / "o")})
    assert (plan.data_dir, plan.demo, plan.challenge, plan.output_dir) == (elsewhere, False, False, tmp_path / "o")
    assert cli.resolve_plan(args, environ={"VCD_DATA_DIR": str(elsewhere), "VCD_CHALLENGE": "1"}).challenge


def _tile_rows(monkeypatch, video_id: str, times: int) -> None:
    """Make finalize return ``times`` copies of one video's rows (a budget violation by the runtime)."""
    from runtime.io.descriptors import VideoDescriptors
    from runtime.pipeline.extractor import Extractor

    original = Extractor.finalize

    def tiled(self, video, duration, role="query"):
        d = original(self, video, duration, role)
        if video.video_id != video_id:
            return d
        return VideoDescriptors(d.video_id, np.tile(d.timestamps, (times, 1)), np.tile(d.features, (times, 1)))

    monkeypatch.setattr(Extractor, "finalize", tiled)


def test_rule_violation_is_exit_1_and_leaves_no_file(data_dir, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "subset_query_descriptors.npz").write_bytes(b"stale output of an earlier run")
    _tile_rows(monkeypatch, "Q1", 3)
    assert main(["--data-dir", str(data_dir), "--output-dir", str(out), "--no-progress", "--device", "cpu"]) == 1
    assert not (out / "subset_query_descriptors.npz").exists()
    assert not list(out.glob("*.tmp"))
    assert "exceed the budget of 9" in caplog.text


def test_budget_uses_decoded_durations_for_ids_missing_from_the_metadata(data_dir, tmp_path, monkeypatch, caplog):
    """Q2 (4 s file) is not in this metadata: the check uses its decoded 4 s, not nothing."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    (data / "query_metadata.csv").write_text("video_id,duration_sec\nQ1,5.0\n")
    args = ["--data-dir", str(data), "--no-progress", "--device", "cpu"]
    assert main([*args, "--output-dir", str(tmp_path / "ok"), "--duplicate-similarity", "1.0"]) == 0
    videos = {v.video_id: v for v in load_descriptors(tmp_path / "ok" / "subset_query_descriptors.npz")}
    assert (len(videos["Q1"]), len(videos["Q2"])) == (5, 4)
    _tile_rows(monkeypatch, "Q2", 2)  # 5 + 8 rows > 5 + 4
    assert main([*args, "--output-dir", str(tmp_path / "bad"), "--duplicate-similarity", "1.0"]) == 1
    assert "13 descriptors exceed the budget of 9" in caplog.text


def test_outputs_honour_the_umask(data_dir, tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        assert main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    finally:
        os.umask(old)
    for name in ("subset_query_descriptors.npz", "errors.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
    stored = next((tmp_path / ".vcd-work" / "query" / "videos").glob("*.npz"))
    assert stat.S_IMODE(stored.stat().st_mode) == 0o640


def test_help_is_plain_text_with_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text
    assert "(default: descriptor)" in text and "2.0" in text and "exit codes:" in text and "vcd-runtime pack" in text


def test_summary_gives_throughput_and_the_ground_truth_file(data_dir, tmp_path, capsys):
    args = ["--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu", "--track", "matching"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "videos/s" in out
    assert "segment AP: " in out and f"(ground truth: {data_dir / 'matching_ground_truth.csv'})" in out


def test_fingerprint_names_the_code_version_and_the_native_build(tmp_path, monkeypatch):
    import hashlib

    import runtime
    from runtime._native import vcd_core
    from runtime.io.results import ResultStore
    from runtime.pipeline.extractor import ExtractorConfig, build_extractor

    extractor = build_extractor(ExtractorConfig(device="cpu"))
    fingerprint = extractor.fingerprint()
    assert fingerprint["package_version"] == runtime.__version__
    assert fingerprint["vcd_core"]["build_id"] == hashlib.sha256(Path(vcd_core.__file__).read_bytes()).hexdigest()
    from runtime.io.descriptors import VideoDescriptors

    store = ResultStore(tmp_path, fingerprint)
    store.save(VideoDescriptors("Q1", np.zeros((1, 2), np.float32), np.ones((1, 4), np.float32)), 1.0)
    monkeypatch.setattr(runtime, "__version__", runtime.__version__ + ".post1")
    assert not ResultStore(tmp_path, extractor.fingerprint()).is_done("Q1")  # an upgrade starts afresh
