"""``vcd-runtime pack``: the zip runs as the challenge container runs it, and broken submissions are refused."""

from __future__ import annotations

import csv
import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.demo import demo_data_dir
from runtime.io.descriptors import load_descriptors
from runtime.io.matches import read_matches_csv
from runtime.pack import PackError, pack
from tests.test_challenge_mode import ALLOWED_LINES

pytestmark = pytest.mark.slow
NOBODY = 65534
AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, Path]:
    """The demo set's full query and reference sets through the CLI, as a team would make its
    submission's descriptors and matches (no query_subset.csv: every query)."""
    data = tmp_path_factory.mktemp("full-data")
    shutil.copytree(demo_data_dir(), data, dirs_exist_ok=True)
    (data / "query_subset.csv").unlink()
    out = tmp_path_factory.mktemp("full-out")
    code = main(["--data-dir", str(data), "--output-dir", str(out), "--no-progress", "--device", "cpu", "--track", "matching"])
    assert code == 0
    return data, out


def _subset_ids(data: Path) -> list[str]:
    with open(data / "matching_ground_truth.csv", newline="") as f:
        copied = sorted({row["query_id"] for row in csv.DictReader(f)})
    others = sorted(p.stem for p in (data / "query").glob("*.mp4") if p.stem not in copied)
    return [copied[0], others[0]]


@pytest.fixture()
def sandbox():
    """A world-readable scratch directory (pytest's tmp_path is private to root; the run drops to nobody)."""
    base = Path(tempfile.mkdtemp(prefix="vcd-pack-"))
    base.chmod(0o755)
    yield base
    for path in [base, *base.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(base)


def _challenge_layout(full_data: Path, root: Path, ids: list[str]) -> Path:
    """What /data holds in the code-execution container: the subset's query videos and the CSVs."""
    (root / "query").mkdir(parents=True)
    for video_id in ids:
        shutil.copy(full_data / "query" / f"{video_id}.mp4", root / "query")
    (root / "query_subset.csv").write_text("video_id\n" + "".join(f"{i}\n" for i in ids))
    for name in ("query_metadata.csv", "reference_metadata.csv"):
        shutil.copy(full_data / name, root / name)
    return root


def _read_only_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        mode = path.stat().st_mode
        path.chmod(stat.S_IMODE(mode) & ~0o222)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _as_nobody(cmd: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]


@functools.cache
def _nobody_can_run_this_python() -> bool:
    """Whether user nobody can import numpy with this interpreter (a venv under a root-only
    directory, e.g. a 0700 mktemp checkout, is unreadable to it)."""
    probe = subprocess.run(_as_nobody([sys.executable, "-c", "import numpy"]), capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


def _container_cmd(cmd: list[str]) -> list[str]:
    """No network (a fresh network namespace) and, as root, run as nobody so that read-only really is.

    Where nobody cannot read this Python's packages, the run stays root; the snapshot check in
    ``_run_unpacked`` still proves that nothing outside the output directory was written.
    """
    if not AS_ROOT:
        return cmd
    if not _nobody_can_run_this_python():
        return ["unshare", "-n", *cmd]
    return ["unshare", "-n", *_as_nobody(cmd)]


def _run_unpacked(zip_path: Path, base: Path, data: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    code_dir, out = base / "code", base / "out"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(code_dir)
    out.mkdir()
    if AS_ROOT and _nobody_can_run_this_python():
        os.chown(out, NOBODY, NOBODY)
    _read_only_tree(code_dir)
    _read_only_tree(data)
    before = _snapshot(code_dir), _snapshot(data)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(out / "home"),
        "TMPDIR": str(out / "tmp"),
        "VCD_DATA_DIR": str(data),
        "VCD_OUTPUT_DIR": str(out),
        "VCD_CHALLENGE": "1",  # the container's data dir is /data, which implies it
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(_container_cmd([sys.executable, "main.py"]), check=False, cwd=code_dir, env=env, capture_output=True, text=True, timeout=300)
    imported = subprocess.run(
        _container_cmd([sys.executable, "-c", "import runtime, vcd_core; print(runtime.__file__); print(vcd_core.__file__)"]),
        cwd=code_dir, env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    for module_file in imported.stdout.split():
        assert Path(module_file).resolve().is_relative_to(code_dir.resolve()), f"imported from outside the zip: {module_file}"
    assert (_snapshot(code_dir), _snapshot(data)) == before, "the run wrote outside its output directory"
    return code_dir, out, done


def _check_console(done: subprocess.CompletedProcess, out: Path) -> None:
    log = out / "vcd-runtime.log"
    assert done.returncode == 0, log.read_text() if log.is_file() else done.stderr
    assert "query: pass" in done.stdout
    for line in filter(str.strip, (done.stdout + done.stderr).splitlines()):
        assert any(p.fullmatch(line) for p in ALLOWED_LINES), line


def test_descriptor_submission_runs_like_the_container(full_run, sandbox, capsys):
    full_data, full_out = full_run
    zip_path = sandbox / "submission.zip"
    assert main(["pack", "--data-dir", str(full_data), "--descriptors-dir", str(full_out), "--output", str(zip_path)]) == 0
    assert "MiB" in capsys.readouterr().out
    names = zipfile.ZipFile(zip_path).namelist()
    for required in ("main.py", "runtime/cli.py", "runtime/pack.py", "model_assets/manifest.json", "model_assets/efficientnet_lite0_gem.onnx",
                     "query_descriptors.npz", "reference_descriptors.npz"):
        assert required in names
    assert any(n.startswith("vcd_core") and n.endswith(".so") for n in names)
    assert not [n for n in names if "__pycache__" in n or "demo_data" in n or n.endswith(".pyc")]
    ids = _subset_ids(full_data)
    _, out, done = _run_unpacked(zip_path, sandbox, _challenge_layout(full_data, sandbox / "data", ids))
    _check_console(done, out)
    subset = {v.video_id: v for v in load_descriptors(out / "subset_query_descriptors.npz")}
    full = {v.video_id: v for v in load_descriptors(full_out / "subset_query_descriptors.npz")}
    assert sorted(subset) == ids
    for video_id in ids:  # the subset run reproduces the submitted descriptors
        np.testing.assert_array_equal(subset[video_id].timestamps, full[video_id].timestamps)
        np.testing.assert_allclose(subset[video_id].features, full[video_id].features, atol=1e-5)


def test_matching_submission_runs_like_the_container(full_run, sandbox):
    full_data, full_out = full_run
    zip_path = sandbox / "matching.zip"
    assert main(["pack", "--track", "matching", "--data-dir", str(full_data), "--descriptors-dir", str(full_out), "--output", str(zip_path)]) == 0
    names = zipfile.ZipFile(zip_path).namelist()
    assert "full_matches.csv" in names and "reference_descriptors.npz" in names and "query_descriptors.npz" not in names
    full = read_matches_csv(full_out / "submission" / "subset_matches.csv")
    matched = sorted({m.query_id for m in full})
    assert matched, "the full run must match some copied query"
    ids = sorted({matched[0], _subset_ids(full_data)[1]})  # a query the full run matched, and an unrelated one
    _, out, done = _run_unpacked(zip_path, sandbox, _challenge_layout(full_data, sandbox / "data", ids))
    _check_console(done, out)
    subset = read_matches_csv(out / "submission" / "subset_matches.csv")
    assert subset, "the subset run must match the query the full run matched"
    expected = [m for m in full if m.query_id in ids]  # per-query candidates: the subset changes nothing
    assert [(m.query_id, m.ref_id) for m in subset] == [(m.query_id, m.ref_id) for m in expected]
    for got, want in zip(subset, expected):
        assert got.query_start == want.query_start and got.ref_end == want.ref_end
        assert got.score == pytest.approx(want.score, abs=1e-5)


def _write_npz(path: Path, ids: list[str], dim: int) -> Path:
    np.savez(path, video_ids=np.array(ids), timestamps=np.zeros((len(ids), 2), np.float32), features=np.ones((len(ids), dim), np.float32))
    return path


@pytest.mark.parametrize("case, message", [
    ("budget", "exceed the budget"),
    ("unknown id", "not in the metadata"),
    ("dims", "D <= 512"),
    ("dims differ", "query descriptors have 8 dims, reference descriptors 129"),
    ("settings", "the packed code makes 128-d descriptors"),
    ("unsorted", "must be sorted"),
])
def test_pack_refuses_a_broken_submission(full_run, tmp_path, case, message):
    full_data, full_out = full_run
    data = tmp_path / "data"
    data.mkdir()
    for name in ("query_metadata.csv", "reference_metadata.csv"):
        shutil.copy(full_data / name, data / name)
    query = full_out / "subset_query_descriptors.npz"
    refs = full_out / "reference_descriptors.npz"
    main_args: list[str] = []
    if case == "budget":
        rows = (data / "query_metadata.csv").read_text().splitlines()
        (data / "query_metadata.csv").write_text("\n".join([rows[0], *(r.split(",")[0] + ",1.0" for r in rows[1:])]) + "\n")
    elif case == "unknown id":
        rows = (data / "reference_metadata.csv").read_text().splitlines()
        (data / "reference_metadata.csv").write_text("\n".join(rows[:-1]) + "\n")
    elif case == "dims":
        query = _write_npz(tmp_path / "q.npz", ["Q200000"], 513)
    elif case == "dims differ":
        query = _write_npz(tmp_path / "q.npz", ["Q200000"], 8)
    elif case == "settings":
        main_args = ["--no-score-norm"]
    elif case == "unsorted":
        query = _write_npz(tmp_path / "q.npz", ["Q200001", "Q200000"], 129)
    out = tmp_path / "submission.zip"
    with pytest.raises(PackError, match=message):
        pack(out, "descriptor", data, query, refs, main_args=main_args)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_pack_cli_refusal_exit_code(full_run, tmp_path, capsys):
    full_data, _ = full_run
    code = main(["pack", "--data-dir", str(full_data), "--descriptors-dir", str(tmp_path / "nothing"), "--output", str(tmp_path / "s.zip")])
    assert code == 2
    assert "pack: refused: reference descriptors" in capsys.readouterr().err and not (tmp_path / "s.zip").exists()
