"""The vcd_core extension's public surface: exactly the documented functions, GIL released; the resize pool."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import vcd_core

EXPECTED_FUNCTIONS = {
    "sample_uniform",
    "sample_at_times",
    "resize_rgb",
    "resize_nv12",
    "resize_yuv420p",
    "set_num_threads",
    "get_num_threads",
    # layout analysis (cpp/layout.h)
    "analyze_layout",
    "VideoLayout",
    "FrameLayout",
    "Rect",
}


def test_module_exports_exactly_the_documented_api():
    public = {name for name in dir(vcd_core) if not name.startswith("_")}
    assert public == EXPECTED_FUNCTIONS
    assert all(callable(getattr(vcd_core, name)) for name in EXPECTED_FUNCTIONS)
    assert isinstance(vcd_core.__version__, str) and vcd_core.__version__.count(".") >= 2


def test_signatures_and_defaults():
    doc = vcd_core.resize_yuv420p.__doc__
    assert doc.startswith(
        "resize_yuv420p(y: numpy.ndarray, u: numpy.ndarray, v: numpy.ndarray, out_height:"
    )
    assert "interpolation: str = 'area', crop: str = 'squash', out_dtype: str = 'uint8'" in doc
    sampler_doc = vcd_core.sample_uniform.__doc__
    assert sampler_doc.startswith("sample_uniform(pts: ") and "duration: " in sampler_doc
    assert "numpy.float64" in sampler_doc.splitlines()[0]


def test_native_import_wrapper_reexports_module():
    from runtime import _native

    assert _native.vcd_core is vcd_core
    assert "pip install ." in inspect.getsource(_native)


def test_resize_releases_the_gil():
    """A Python thread keeps running while resizes run in the main thread."""
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 720, 1280, 3), dtype=np.uint8)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.0005)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.01)
    start_ticks, calls, start = ticks, 0, time.perf_counter()
    while time.perf_counter() - start < 0.3:
        vcd_core.resize_rgb(frames, 224, 224, num_threads=1)
        calls += 1
    during = ticks - start_ticks
    stop.set()
    counter.join()
    # Holding the GIL, the counter could only tick between calls (about once per call).
    assert during > 3 * calls, (during, calls)


# --- the persistent resize pool (Note [One persistent pool] in cpp/thread_pool.h) ----------


@pytest.fixture
def restore_pool_size():
    yield
    vcd_core.set_num_threads(0)


def test_pool_defaults_to_the_process_cpu_affinity(restore_pool_size):
    vcd_core.set_num_threads(0)
    assert vcd_core.get_num_threads() == len(os.sched_getaffinity(0))


def test_pool_default_follows_a_restricted_affinity_mask():
    """A process pinned to one CPU (taskset, cgroups) gets a pool of one, whatever the machine has."""
    code = "import os, vcd_core; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(vcd_core.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "1"


def test_set_num_threads_resizes_the_pool_and_rejects_negative_counts(restore_pool_size):
    for n in (1, 3, 2):
        vcd_core.set_num_threads(n)
        assert vcd_core.get_num_threads() == n
    with pytest.raises(ValueError, match=r"num_threads must be >= 0 \(0 = the CPUs in the process's affinity mask\), got -1"):
        vcd_core.set_num_threads(-1)
    assert vcd_core.get_num_threads() == 2


def test_concurrent_callers_share_the_pool_and_each_get_their_own_result(restore_pool_size):
    """Several Python threads resizing at once (and a resize of the pool meanwhile) all get exact results."""
    vcd_core.set_num_threads(3)
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, 256, size=(3, 97 + 13 * k, 131, 3), dtype=np.uint8) for k in range(6)]
    expected = [vcd_core.resize_rgb(b, 61, 45, num_threads=1) for b in batches]
    failures: list[str] = []

    def work(k: int) -> None:
        for _ in range(15):
            if not np.array_equal(vcd_core.resize_rgb(batches[k], 61, 45), expected[k]):
                failures.append(f"batch {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for n in (1, 4, 2):
        vcd_core.set_num_threads(n)
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a resize call hung"
    assert not failures


def test_a_worker_error_reaches_its_caller_and_the_pool_keeps_working(restore_pool_size):
    vcd_core.set_num_threads(2)
    with pytest.raises(ValueError, match="frames must have shape"):
        vcd_core.resize_rgb(np.zeros((2, 8, 8, 4), np.uint8), 4, 4)
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(vcd_core.resize_rgb(frames, 32, 32), vcd_core.resize_rgb(frames, 32, 32, num_threads=1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_resize_works_in_a_forked_child(restore_pool_size):
    vcd_core.set_num_threads(2)
    frames = np.random.default_rng(1).integers(0, 256, size=(4, 120, 160, 3), dtype=np.uint8)
    expected = vcd_core.resize_rgb(frames, 50, 40)  # the parent's pool is running now
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a multi-threaded process: exactly the case under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: only this thread exists; the pool must start afresh, not hang
        try:
            ok = np.array_equal(vcd_core.resize_rgb(frames, 50, 40), expected) and vcd_core.get_num_threads() == 2
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in resize")
    assert os.read(read, 1) == b"1"
    os.close(read)
    np.testing.assert_array_equal(vcd_core.resize_rgb(frames, 50, 40), expected)  # the parent's pool still works


def test_process_exits_promptly_with_resizes_running_in_daemon_threads():
    """The pool is joined at exit without deadlock, even while other threads are mid-resize."""
    code = textwrap.dedent(
        """
        import threading, numpy as np, vcd_core
        vcd_core.set_num_threads(2)
        frames = np.zeros((8, 360, 640, 3), np.uint8)
        def spin():
            while True:
                vcd_core.resize_rgb(frames, 224, 224)
        for _ in range(3):
            threading.Thread(target=spin, daemon=True).start()
        vcd_core.resize_rgb(frames, 224, 224)
        print("exiting")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "exiting"
