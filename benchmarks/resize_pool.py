"""Per-call resize time: the persistent C++ pool vs the previous per-call threads, side by side in one run.

Decodes real 640x360 yuv420p frames (a mini-VSC query video) with PyAV and times
``resize_yuv420p(..., 224, 224)`` (area, squash, uint8; the pipeline's call) per call, for a
few batch sizes and numbers of concurrent callers. Both builds are loaded into this one
process and every caller alternates between them call by call, so both see the same machine
load even on a busy, shared machine. The baseline is the C++ core of a git revision built
under the module name ``vcd_core_baseline`` (``--baseline-rev``: ``git show`` of its cpp/
and CMakeLists.txt into a scratch dir, CMake + Ninja; two extensions of one name cannot
share a process), or a ready ``--baseline`` file.

    python -m benchmarks.resize_pool --baseline-rev HEAD --video /work/data/mini-vsc-small/query/Q200009.mp4

The candidate defaults to the importable ``vcd_core``. The num_threads=1 row (no pool
involved) is the control: it shows how much of a difference is the arithmetic rather than
the threading.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np

# (frames per call, concurrent callers, num_threads per call; 0 = all)
SCENARIOS = ((1, 1, 1), (1, 1, 0), (4, 1, 0), (16, 1, 0), (1, 2, 0), (4, 2, 0))


def load_frames(video: Path | None, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, u, v) yuv420p planes of ``count`` decoded frames, or a synthetic gradient without a video."""
    if video is None:
        rng = np.random.default_rng(0)
        base = np.add.outer(np.arange(360), np.arange(640)).astype(np.uint8)
        y = np.stack([np.roll(base, k, axis=1) for k in range(count)])
        u = rng.integers(16, 240, (count, 180, 320), dtype=np.uint8)
        return y, u, u[:, ::-1].copy()
    import av

    ys, us, vs = [], [], []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            planes = frame.reformat(format="yuv420p").to_ndarray()  # (H * 3 / 2, W)
            h, w = frame.height, frame.width
            ys.append(planes[:h])
            us.append(planes[h : h + h // 4].reshape(h // 2, w // 2))
            vs.append(planes[h + h // 4 :].reshape(h // 2, w // 2))
            if len(ys) == count:
                break
    if not ys:
        raise SystemExit(f"no frames decoded from {video}")
    return np.stack(ys), np.stack(us), np.stack(vs)


REPO = Path(__file__).resolve().parent.parent
_BASELINE_SOURCES = ("bindings.cpp", "preprocess.cpp", "preprocess.h", "sampler.cpp", "sampler.h", "thread_pool.h")


def build_baseline(rev: str, out_dir: Path) -> Path:
    """Build the C++ core of git revision ``rev`` as the extension ``vcd_core_baseline`` in ``out_dir``."""
    import pybind11

    src = out_dir / "src"
    (src / "cpp").mkdir(parents=True, exist_ok=True)

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True,
                              check=True).stdout

    for name in _BASELINE_SOURCES:
        text = show(f"cpp/{name}")
        if name == "bindings.cpp":
            text = text.replace("PYBIND11_MODULE(vcd_core,", "PYBIND11_MODULE(vcd_core_baseline,")
        (src / "cpp" / name).write_text(text)
    cmake = show("CMakeLists.txt").replace("pybind11_add_module(vcd_core ", "pybind11_add_module(vcd_core_baseline ")
    cmake = cmake.replace("(vcd_core PRIVATE", "(vcd_core_baseline PRIVATE")
    cmake = "\n".join(line for line in cmake.splitlines() if not line.startswith(("install(", "include(cmake")))
    (src / "CMakeLists.txt").write_text(cmake + "\n")
    build = out_dir / "build"
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return next(build.glob("vcd_core_baseline*.so"))


def load_build(path: Path) -> ModuleType:
    """An extension module from ``path`` (its name is the file name up to the first dot)."""
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"not an extension module: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(builds: dict[str, ModuleType], frames, batch: int, callers: int, num_threads: int, calls: int):
    """{build: [per-call seconds]} with every caller alternating between the builds call by call."""
    y, u, v = frames
    samples: dict[str, list[float]] = {name: [] for name in builds}
    lock = threading.Lock()

    def run(offset: int) -> None:
        local: dict[str, list[float]] = {name: [] for name in builds}
        names = list(builds)
        for k in range(calls):
            at = (offset + k * batch) % (len(y) - batch + 1)
            for name in names if k % 2 == 0 else reversed(names):
                start = time.perf_counter()
                builds[name].resize_yuv420p(
                    y[at : at + batch], u[at : at + batch], v[at : at + batch], 224, 224, num_threads=num_threads
                )
                local[name].append(time.perf_counter() - start)
        with lock:
            for name, times in local.items():
                samples[name].extend(times)

    threads = [threading.Thread(target=run, args=(7 * c,)) for c in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    base = parser.add_mutually_exclusive_group(required=True)
    base.add_argument("--baseline-rev", help="git revision whose C++ core is the baseline (built here)")
    base.add_argument("--baseline", type=Path, help="a ready baseline extension (.so) named other than vcd_core")
    parser.add_argument("--candidate", type=Path, help="the new build (.so; default: the importable vcd_core)")
    parser.add_argument("--video", type=Path, help="a 640x360 video to take frames from (default: synthetic)")
    parser.add_argument("--calls", type=int, default=300, help="calls per build, caller and scenario")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    if args.candidate is None:
        import vcd_core

        args.candidate = Path(vcd_core.__file__)
    scratch = None
    if args.baseline_rev:
        scratch = Path(tempfile.mkdtemp(prefix="vcd-baseline-"))
        args.baseline = build_baseline(args.baseline_rev, scratch)
    if args.baseline.name.split(".")[0] == args.candidate.name.split(".")[0]:
        raise SystemExit("the baseline must have another module name than the candidate (see --baseline-rev)")
    builds = {"baseline": load_build(args.baseline), "pool": load_build(args.candidate)}
    if not hasattr(builds["pool"], "get_num_threads"):
        raise SystemExit(f"{args.candidate} has no resize pool (get_num_threads)")
    frames = load_frames(args.video, 32)
    for name, build in builds.items():  # warm up (the pool starts on first use)
        build.resize_yuv420p(frames[0][:4], frames[1][:4], frames[2][:4], 224, 224)

    label = args.baseline_rev or args.baseline
    print(f"baseline {label}; pool {args.candidate} ({builds['pool'].get_num_threads()} threads); "
          f"affinity CPUs {len(os.sched_getaffinity(0))}; frames {'synthetic' if args.video is None else args.video.name} "
          f"{frames[0].shape[2]}x{frames[0].shape[1]} yuv420p -> 224x224 area; {args.calls} calls per build and caller")
    print("| frames/call | callers | num_threads | baseline median us/call | pool median us/call | baseline/pool |")
    print("|---:|---:|---:|---:|---:|---:|")
    rows = []
    for batch, callers, num_threads in SCENARIOS:
        samples = measure(builds, frames, batch, callers, num_threads, args.calls)
        base = statistics.median(samples["baseline"]) * 1e6
        new = statistics.median(samples["pool"]) * 1e6
        rows.append({"frames": batch, "callers": callers, "num_threads": num_threads,
                     "baseline_us": base, "pool_us": new, "ratio": base / new})
        print(f"| {batch} | {callers} | {num_threads or 'all'} | {base:.0f} | {new:.0f} | {base / new:.2f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "video": str(args.video), "calls": args.calls}, indent=2))
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
