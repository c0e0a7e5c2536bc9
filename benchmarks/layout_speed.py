"""CPU cost of the layout analysis (``vcd_core.analyze_layout``) per frame, for plain and laid-out videos side by side.

    python -m benchmarks.layout_speed [--frames 48] [--repeats 3] [--json OUT]

Frames are real footage (the demo references) composed with the dataset's edits at 640 x 360.
Times are the calling thread's CPU time (the analysis is single-threaded), so a loaded machine
does not inflate them; the wall time is reported too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import av
import numpy as np

from benchmarks.edits import EDIT_REGISTRY, EditContext, resize_frame
from runtime._native import vcd_core
from runtime.preprocess.layout import luma_of_rgb

DEMO = Path(__file__).resolve().parents[1] / "runtime" / "demo_data" / "reference"
CASES = {
    "plain": (None, {}),
    "hstack": ("hstack", {"other_width": 0.7, "other_first": True}),
    "picture_in_picture": ("picture_in_picture", {"mode": "copy_inset", "size": 0.6, "x": 0.3, "y": 0.7}),
    "pad": ("pad", {"top": 0.2, "bottom": 0.2, "left": 0.0, "right": 0.0, "color": [0, 0, 0]}),
}


def _frames(name: str, count: int) -> list[np.ndarray]:
    out = []
    with av.open(str(DEMO / f"{name}.mp4")) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
    return [out[i % len(out)] for i in range(0, count * 7, 7)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48, help="frames per video (the default max_analysis_frames)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    copy, other = _frames("R100000", args.frames), _frames("R100003", args.frames)
    results = {}
    for case, (edit, params) in CASES.items():
        frames = []
        for k, (a, b) in enumerate(zip(copy, other)):
            edited = EDIT_REGISTRY[edit].apply(a, params, EditContext(k, 0, b)) if edit else a
            frames.append(resize_frame(edited, args.width, args.height))
        luma = np.ascontiguousarray(luma_of_rgb(np.stack(frames)))
        cpu, wall = [], []
        for _ in range(args.repeats):
            c0, w0 = time.thread_time(), time.perf_counter()
            layout = vcd_core.analyze_layout(luma)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        results[case] = {
            "frames": len(luma),
            "cpu_ms_per_frame": 1e3 * min(cpu) / len(luma),
            "wall_ms_per_frame": 1e3 * min(wall) / len(luma),
            "cpu_ms_per_video": 1e3 * min(cpu),
            "grid": [layout.grid_rows, layout.grid_cols],
            "window": layout.has_window,
            "border": layout.has_border,
        }
        print(f"{case:20s} {results[case]['cpu_ms_per_frame']:6.2f} ms/frame CPU ({results[case]['wall_ms_per_frame']:6.2f} wall), "
              f"{results[case]['cpu_ms_per_video']:7.1f} ms per {len(luma)}-frame video; grid {layout.grid_rows}x{layout.grid_cols} "
              f"window {layout.has_window} border {layout.has_border}")
    if args.json is not None:
        args.json.write_text(json.dumps({"size": [args.width, args.height], "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
