"""Challenge mode: the console reveals nothing about the videos in the data directory (Note [Challenge mode])."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from runtime.cli import LOG_FILE, _logging_to
from tests.bad_inputs import cut_mid_gop, garbage_mid_file, zero_byte
from tests.video_factory import moving_pattern, write_video

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Every line a challenge-mode console may show.
ALLOWED_LINES = [
    re.compile(r"(query|reference|matching): pass"),
    re.compile(r"(query|reference): fail \(details in errors\.json and vcd-runtime\.log in the output directory\)"),
    re.compile(r"done: \d of \d splits passed; outputs written; exit code [03]"),
    re.compile(r"error: (unusable input|internal error) \(exit code [12]; details in vcd-runtime\.log in the output directory\)"),
]
# Durations distinctive enough to grep for (each is one video's metadata duration).
DURATIONS = {"Qsecret-alpha": 3.7, "Qsecret-bravo": 4.9, "Qsecret-cut": 6.3, "Qsecret-garbage": 5.7, "Qsecret-empty": 2.3}


@pytest.fixture(scope="module")
def challenge_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("secret-data")

    def shots(seed: int, n: int) -> list:
        return [moving_pattern(i, 48, 64, seed=1000 * seed + i // 5) for i in range(n)]

    write_video(root / "query" / "Qsecret-alpha.mp4", frames=shots(1, 37), fps=10)
    write_video(root / "query" / "Qsecret-bravo.mp4", frames=shots(2, 49), fps=10)
    cut_mid_gop(root / "query" / "Qsecret-cut.mp4")  # partial decode: warnings that name the path
    garbage_mid_file(root / "query" / "Qsecret-garbage.mp4")
    zero_byte(root / "query" / "Qsecret-empty.mp4")
    write_video(root / "reference" / "Rsecret-one.mp4", frames=shots(1, 50), fps=10)
    ids = [*DURATIONS, "Qsecret-missing", "Qsecret-unlisted", "Qsecret-alpha"]  # no file; not in metadata; listed twice
    (root / "query_subset.csv").write_text("video_id\n" + "\n".join(ids) + "\n")
    rows = "".join(f"{i},{d}\n" for i, d in DURATIONS.items()) + "Qsecret-missing,7.1\nQsecret-alpha,9.9\n"
    (root / "query_metadata.csv").write_text("video_id,duration_sec\n" + rows)
    (root / "reference_metadata.csv").write_text("video_id,duration_sec\nRsecret-one,5.0\n")
    return root


def _secrets(data: Path) -> list[str]:
    """Strings that must never reach the console: ids, paths, names and per-video numbers."""
    names = [p for split in ("query", "reference") for p in (data / split).iterdir()]
    out = [str(data), data.name, "secret", "Qsecret-missing", "Qsecret-unlisted"]
    out += [str(p) for p in names] + [p.name for p in names] + [p.stem for p in names]
    out += [str(d) for d in DURATIONS.values()] + ["7.1", "9.9"]
    return out


def _run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"}
    cmd = [sys.executable, str(REPO / "main.py"), "--data-dir", str(data), "--output-dir", str(out), "--device", "cpu", "--challenge", *extra]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)


def _assert_console_reveals_nothing(console: str, data: Path) -> None:
    lines = [line for line in console.splitlines() if line.strip()]
    assert lines, "challenge mode still prints its pass/fail lines"
    for line in lines:
        assert any(p.fullmatch(line) for p in ALLOWED_LINES), f"unexpected console line: {line!r}"
    for secret in _secrets(data):
        assert secret not in console, secret


def test_challenge_console_names_no_video_path_or_number(challenge_data, tmp_path):
    done = _run(challenge_data, tmp_path, "--references")
    console = done.stdout + done.stderr
    assert done.returncode == 0, (tmp_path / LOG_FILE).read_text()
    _assert_console_reveals_nothing(console, challenge_data)
    assert "query: fail" in console and "reference: pass" in console
    # The details are in the output directory instead.
    errors = {e["video_id"]: e for e in json.loads((tmp_path / "errors.json").read_text())}
    assert {"Qsecret-empty", "Qsecret-missing"} <= set(errors)
    log = (tmp_path / LOG_FILE).read_text()
    assert "Qsecret-empty" in log and str(challenge_data) in log
    assert (tmp_path / "subset_query_descriptors.npz").is_file()


def test_challenge_mode_unusable_input_says_only_that(challenge_data, tmp_path):
    import shutil

    data = tmp_path / "data-secret"
    shutil.copytree(challenge_data, data)
    (data / "query_subset.csv").write_text("id\nQsecret-alpha\n")
    done = _run(data, tmp_path / "out")
    assert done.returncode == 2
    _assert_console_reveals_nothing(done.stdout + done.stderr, data)
    assert "missing columns" in (tmp_path / "out" / LOG_FILE).read_text()


def test_everything_written_in_challenge_mode_goes_to_the_log(tmp_path, capfd):
    log = tmp_path / LOG_FILE
    with _logging_to(log, challenge=True) as console, warnings.catch_warnings():
        warnings.simplefilter("always")  # as a real run has it (pytest turns warnings into errors)
        logging.getLogger("libav.h264").warning("Qsecret-1 from a logger")
        warnings.warn("Qsecret-2 from a warning", UserWarning, stacklevel=1)
        print("Qsecret-3 from print")
        print("Qsecret-4 from print to stderr", file=sys.stderr)
        os.write(1, b"Qsecret-5 native stdout\n")
        os.write(2, b"Qsecret-6 native stderr\n")
        print("the verdict", file=console)
    captured = capfd.readouterr()
    assert "Qsecret" not in captured.out + captured.err
    assert "the verdict" in captured.out
    text = log.read_text()
    for n in range(1, 7):
        assert f"Qsecret-{n}" in text
    os.write(2, b"after the run\n")  # the descriptors are restored
    assert "after the run" in capfd.readouterr().err
