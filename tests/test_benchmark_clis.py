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


def _layout_build(tmp_path):
    """A tiny build: Q1 copies R1 under hstack (2-4 s of 0-6 s) and R2 under rotate90|pad; Q2 is plain."""
    (tmp_path / "edits.csv").write_text("query_id,ref_id,edits\nQ1,R1,hstack\nQ1,R2,rotate90|pad\nQ2,R3,blur\n")
    plan = {"queries": {
        "Q1": {"fps": "2/1", "parts": [{"n_frames": 4, "edits": []}, {"n_frames": 4, "edits": [{"name": "hstack"}]},
                                       {"n_frames": 4, "edits": [{"name": "rotate90"}, {"name": "pad"}]}]},
        "Q2": {"fps": "2/1", "parts": [{"n_frames": 12, "edits": [{"name": "blur"}]}]}}}
    (tmp_path / "dataset.json").write_text(json.dumps(plan))
    return tmp_path


def test_rank_first_counts_true_references_ranked_first_skipping_the_others(tmp_path):
    from runtime.search.candidates import CandidatePair

    build = _layout_build(tmp_path)
    gt = [("Q1", "R1"), ("Q1", "R2"), ("Q2", "R3")]
    # Q1: R2 (true) 0.9 > R9 (false) 0.8 > R1 (true) 0.7: R1 ranks 2nd (R2 skipped), R2 first
    candidates = [CandidatePair("Q1", "R1", 0.7), CandidatePair("Q1", "R2", 0.9), CandidatePair("Q1", "R9", 0.8),
                  CandidatePair("Q2", "R3", 0.5)]
    ranks = evaluate.rank_first(build, candidates, gt)
    assert ranks["hstack"] == {"first": 0, "pairs": 1, "not_first": {"Q1/R1": 2}}
    assert ranks["rotate90"] == {"first": 1, "pairs": 1, "not_first": {}} and ranks["pad"]["first"] == 1
    assert "vstack" not in ranks and "blur" not in ranks


def test_layout_windows_flags_only_windows_over_footage_without_layout_edits(tmp_path):
    build = _layout_build(tmp_path)

    def window(kind, samples, times):
        return {"kind": kind, "samples": samples, "times": times}

    layouts = {"Q1": {"windows": [window("plain", [0, 4], [0.0, 2.0]), window("grid", [4, 8], [2.0, 4.0]),
                                  window("turned", [8, 12], [4.0, 6.0])]},
               "Q2": {"windows": [window("window", [0, 6], [0.0, 3.0]), window("turned", [6, 12], [3.0, 6.0])]}}
    result = evaluate.layout_windows(build, layouts)
    assert result["windows_by_kind"] == {"grid": 1, "plain": 1, "turned": 2, "window": 1}
    assert result["mistaken"] == ["Q2[0:6] window", "Q2[6:12] turned"]
