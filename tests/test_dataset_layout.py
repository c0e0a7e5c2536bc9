import pytest

from runtime.io.dataset import DatasetError, read_metadata, read_video_ids, video_tasks


def _layout(root, subset="video_id\nQ2\nQ1\nQ1\n", metadata="video_id,duration_sec,frames_per_second\nQ1,10.5,30\nQ2,abc,30\n"):
    (root / "query").mkdir(parents=True)
    (root / "query_subset.csv").write_text(subset)
    (root / "query_metadata.csv").write_text(metadata)
    return root


def test_tasks_sorted_deduplicated_with_durations(tmp_path):
    root = _layout(tmp_path)
    tasks = video_tasks(root, "query", subset_csv=root / "query_subset.csv")
    assert [t.video_id for t in tasks] == ["Q1", "Q2"]
    assert tasks[0].duration == 10.5 and tasks[1].duration is None
    assert tasks[0].path == root / "query" / "Q1.mp4"


def test_tasks_from_metadata_when_no_subset(tmp_path):
    root = _layout(tmp_path)
    assert [t.video_id for t in video_tasks(root, "query")] == ["Q1", "Q2"]


@pytest.mark.parametrize(
    "content, message",
    [("", "empty CSV"), ("id,duration\nQ1,3\n", "missing columns \\['video_id'\\]"), ('video_id\n"Q1\n', "malformed|missing")],
)
def test_bad_subset_csv(tmp_path, content, message):
    path = tmp_path / "s.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_video_ids(path)


def test_missing_files_and_dirs(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_metadata(tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match="data directory not found"):
        video_tasks(tmp_path / "nope", "query")
    with pytest.raises(ValueError, match="'query' or 'reference'"):
        video_tasks(tmp_path, "train")


def test_duplicate_metadata_rows_keep_first(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("video_id,duration_sec\nR1,5\nR1,9\n")
    assert read_metadata(path) == {"R1": 5.0}
