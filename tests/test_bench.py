"""The runtime benchmark CLI: real cpu/naive runs on tiny videos, skipped GPU modes, JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.bench import E2E_MODES, derived_checks, format_table, latency_summary, main

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "model_assets" / "manifest.json"


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from video_factory import write_video

    directory = tmp_path_factory.mktemp("bench_videos")
    for seed in range(2):
        write_video(directory / f"clip{seed}.mp4", num_frames=50, height=48, width=64, fps=25, seed=seed)  # 2 s
    return directory


def check_e2e_row(row: dict, videos: int) -> None:
    assert set(row) == {"videos", "failures", "frames", "seconds", "videos_per_s", "frames_per_s", "seconds_per_video", "gpu_busy_share",
                        "precision", "decode_modes", "max_time_error"}
    assert row["videos"] == videos and row["failures"] == 0
    assert row["frames"] == 2 * videos  # 2 s at 1 sample/s
    assert row["videos_per_s"] > 0 and row["frames_per_s"] > 0
    spv = row["seconds_per_video"]
    assert 0 < spv["p50"] <= spv["p95"] <= spv["max"]


@pytest.mark.slow
def test_cpu_and_naive_run_for_real_and_gpu_modes_are_reported(video_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not MANIFEST.is_file():
        pytest.skip("no model_assets/manifest.json")
    out = tmp_path / "bench.json"
    code = main(
        ["--videos", str(video_dir), "--backends", "gpu,gpu-serial,cpu,naive", "--json", str(out), "--model-dir", str(MANIFEST.parent),
         "--infer-batch", "4", "--infer-seconds", "0.2", "--cpu-workers", "2", "--cpu-batch", "4", "--fps", "1", "--decode-only-modes", "full"]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["schema_version"] == 2
    assert set(report) == {"schema_version", "machine", "videos", "settings", "availability", "decode_only", "inference_only", "end_to_end", "checks"}
    assert report["videos"]["count"] == 2
    assert list(report["end_to_end"]) == ["gpu", "gpu-serial", "cpu", "naive"]
    for mode in ("cpu", "naive"):
        check_e2e_row(report["end_to_end"][mode], 2)
        assert report["end_to_end"][mode]["gpu_busy_share"] is None
    assert report["decode_only"]["pyav"]["frames"] == 4 and report["decode_only"]["pyav"]["frames_per_s"] > 0
    assert report["inference_only"]["batch"] == 4 and report["inference_only"]["onnxruntime"]["images_per_s"] > 0
    if not report["availability"]["gpu"]["ok"]:
        for mode in ("gpu", "gpu-serial"):
            assert report["end_to_end"][mode] == {"skipped": report["availability"]["gpu"]["reason"]}
        assert "skipped" in report["decode_only"]["nvdec"] and "skipped" in report["inference_only"]["tensorrt"]
        assert report["checks"]["gpu_over_naive"] is None
    table = capsys.readouterr().out
    assert "naive" in table and "images/s" in table


def test_bad_backend_list_is_a_usage_error(video_dir: Path, tmp_path: Path) -> None:
    if not MANIFEST.is_file():
        pytest.skip("no model_assets/manifest.json")
    assert main(["--videos", str(video_dir), "--backends", "cpu,turbo", "--json", str(tmp_path / "x.json"), "--model-dir", str(MANIFEST.parent)]) == 2
    assert main(["--videos", str(tmp_path / "nothing"), "--backends", "cpu", "--json", str(tmp_path / "x.json"), "--model-dir", str(MANIFEST.parent)]) == 2


def test_latency_summary() -> None:
    assert latency_summary([]) == {"p50": None, "p95": None, "max": None}
    summary = latency_summary([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary["p50"] == 3.0 and summary["max"] == 100.0 and 4.0 < summary["p95"] < 100.0


def test_checks_and_table_from_a_synthetic_report() -> None:
    row = {"videos": 10, "failures": 1, "frames": 300, "seconds": 2.0, "videos_per_s": 5.0, "frames_per_s": 150.0,
           "seconds_per_video": {"p50": 0.1, "p95": 0.2, "max": 0.3}, "gpu_busy_share": 0.5}
    report = {
        "end_to_end": {"gpu": row, "naive": {**row, "videos_per_s": 0.25, "gpu_busy_share": None}, "cpu": {"skipped": "no ORT"}},
        "decode_only": {"nvdec": {"frames_per_s": 160.0}, "pyav": {"skipped": "no av"}},
        "inference_only": {"batch": 8, "tensorrt_vs_onnxruntime_cosine": {"min": 0.9995, "mean": 0.9999}},
    }
    checks = derived_checks(report)
    assert checks["gpu_over_naive"] == pytest.approx(20.0)
    assert checks["gpu_over_nvdec_decode_only"] == pytest.approx(150.0 / 160.0)
    assert checks["trt_vs_ort_min_cosine"] == 0.9995 and checks["gpu_worst_seconds_per_video"] == 0.3
    report["checks"] = checks
    table = format_table(report)
    assert "skipped: no ORT" in table and "50%" in table and "1 failed" in table


@pytest.mark.slow
def test_peers_and_previous_defaults_run_side_by_side(video_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    if not MANIFEST.is_file():
        pytest.skip("no model_assets/manifest.json")
    out = tmp_path / "bench.json"
    modes = "cpu,cpu-previous,peer-ffmpeg,peer-torchcodec"
    code = main(["--videos", str(video_dir), "--backends", modes, "--json", str(out), "--model-dir", str(MANIFEST.parent), "--decode-mode", "auto",
                 "--precision", "fp32", "--infer-batch", "2", "--infer-seconds", "0.1", "--cpu-workers", "1", "--cpu-batch", "4", "--fps", "1"])
    assert code == 0
    report = json.loads(out.read_text())
    e2e = report["end_to_end"]
    assert list(e2e) == modes.split(",") and set(E2E_MODES) >= set(e2e)
    for mode in ("cpu", "cpu-previous"):
        check_e2e_row(e2e[mode], 2)
        assert e2e[mode]["max_time_error"] < 1 / 25 + 1e-6  # 25 fps clips, 1 sample/s
    assert e2e["cpu-previous"]["decode_modes"] == {"full": 2} and e2e["cpu-previous"]["precision"] == "fp32"
    assert sum(e2e["cpu"]["decode_modes"].values()) == 2 and "full" not in e2e["cpu"]["decode_modes"]
    if shutil.which("ffmpeg"):
        check_e2e_row(e2e["peer-ffmpeg"], 2)  # ffmpeg's fps filter also gives 2 frames for 2 s at 1 fps
    else:
        assert "ffmpeg" in e2e["peer-ffmpeg"]["skipped"]
    assert "skipped" in e2e["peer-torchcodec"] or e2e["peer-torchcodec"]["failures"] == 0
    assert report["decode_only"]["pyav-auto"]["frames"] == 4
    assert "cpu videos/s over: cpu-previous" in capsys.readouterr().out
