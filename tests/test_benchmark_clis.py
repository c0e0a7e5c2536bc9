"""The evaluation and ablation CLIs of benchmarks/ on the embedded demo set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import ablation, evaluate
from runtime.demo import demo_data_dir
from runtime.records import VideoEmbeddings, VideoInfo


@pytest.mark.slow
def test_evaluate_cli_on_demo(tmp_path, capsys):
    out_json, plot = tmp_path / "r.json", tmp_path / "pr.png"
    code = evaluate.main(["--dataset", str(demo_data_dir()), "--json", str(out_json), "--plot", str(plot),
                          "--work-dir", str(tmp_path / "work"), "--no-progress", "--device", "cpu"])
    assert code == 0
    result = json.loads(out_json.read_text())
    assert 0.5 < result["descriptor_uap"] <= 1.0
    assert 0.0 < result["segment_ap"] <= 1.0
    assert result["ground_truth_pairs"] == 3 and result["queries"] == 6 and result["references"] == 4
    assert set(result["edit_recall_at_p90"]) >= {"scale", "crop"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "descriptor track µAP" in capsys.readouterr().out


def test_subsample_keeps_whole_second_samples():
    intervals = np.array([[0, 0.5], [0.5, 1], [1, 1.5], [1.5, 2], [2, 2.5]])
    video = VideoEmbeddings("Q", intervals, np.eye(5, dtype=np.float32), VideoInfo("q.mp4", 2.5, 30.0, 64, 48, "h264"))
    sub = ablation.subsample(video, 1.0)
    np.testing.assert_array_equal(sub.intervals, [[0, 1], [1, 2], [2, 2.5]])
    np.testing.assert_array_equal(sub.embeddings, np.eye(5, dtype=np.float32)[[0, 2, 4]])
    assert ablation.subsample(video, 2.0) is video


def test_markdown_table_lists_variants_and_edits():
    row = {"variant": "v", "descriptor_uap": 0.5, "descriptor_recall": 1.0, "segment_ap": 0.25, "query_descriptors": 3,
           "budget": 4, "edit_recall_at_p90": {"crop": {"recall": 0.5, "pairs": 2}}}
    table = ablation.to_markdown([row])
    assert "| v | 0.5000 | 1.000 | 0.2500 | 3 / 4 |" in table
    assert "| v | 0.50 |" in table and "| (pairs) | 2 |" in table
