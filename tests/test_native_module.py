"""The vcd_core extension's public surface: exactly the documented functions, GIL released."""

from __future__ import annotations

import inspect
import threading
import time

import numpy as np
import vcd_core

EXPECTED_FUNCTIONS = {"sample_uniform", "sample_at_times", "resize_rgb", "resize_nv12", "resize_yuv420p"}


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
