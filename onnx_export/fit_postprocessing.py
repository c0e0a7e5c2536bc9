"""Fit the shipped postprocessing on TRAINING references: PCA whitening and the score-normalisation noise set.

    python -m onnx_export.fit_postprocessing --train-dir DATASET/train --model-dir model_assets [--dim 128]

Runs the model (ONNX Runtime, CPU) on ``train-dir/reference/*.mp4`` at ``--sample-fps``,
fits PCA whitening to ``--dim`` dims, builds the noise set from the projected training
descriptors, writes ``pca_whitening.npz`` and ``noise_set.npz`` next to the ONNX model and
records both in ``manifest.json``. Never point this at test data (queries or the references
being searched): the challenge forbids fitting on them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from runtime.decode.pyav import PyAVDecoder
from runtime.infer.ort import OnnxRuntimeBackend
from runtime.io.dataset import video_tasks
from runtime.io.descriptors import VideoDescriptors
from runtime.model_manifest import ModelManifest
from runtime.pipeline.devices import build_host_pipeline
from runtime.pipeline.extractor import preprocess_config
from runtime.postprocess.projection import Projection
from runtime.postprocess.score_normalization import fit_noise_set, save_noise_set
from runtime.records import VideoEmbeddings
from runtime.sampling import SamplingPolicy

logger = logging.getLogger("onnx_export.fit_postprocessing")

PROJECTION_FILE = "pca_whitening.npz"
NOISE_FILE = "noise_set.npz"


def train_embeddings(train_dir: Path, manifest: ModelManifest, sample_fps: float) -> list[VideoEmbeddings]:
    """Raw model embeddings of the training references."""
    from tqdm import tqdm

    tasks = video_tasks(train_dir, "reference")
    pipeline = build_host_pipeline(PyAVDecoder(), OnnxRuntimeBackend(manifest.onnx_path), SamplingPolicy(fps=sample_fps), preprocess_config(manifest))
    out = []
    for result in tqdm(pipeline.run(tasks), total=len(tasks), desc="train references", unit="video"):
        if isinstance(result, VideoEmbeddings):
            out.append(result)
        else:
            logger.warning("skipping %s: %s", result.video_id, result.message)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-dir", type=Path, required=True, help="training split in the challenge layout (reference/*.mp4)")
    parser.add_argument("--model-dir", type=Path, default=Path("model_assets"))
    parser.add_argument("--dim", type=int, default=128,
                        help="descriptor dims after PCA (<= 511 leaves room for score normalisation; 128 measured best, benchmarks/RESULTS.md)")
    parser.add_argument("--sample-fps", type=float, default=8.0,
                        help="training frames per second (the training footage is short: dense sampling gives PCA enough frames)")
    parser.add_argument("--no-whiten", action="store_true")
    parser.add_argument("--noise-max", type=int, default=20000, help="largest noise set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    manifest_file = args.model_dir / "manifest.json"
    manifest = ModelManifest.load(manifest_file)
    videos = train_embeddings(args.train_dir, manifest, args.sample_fps)
    features = np.concatenate([v.embeddings for v in videos])
    source = f"{len(videos)} training references from {args.train_dir.resolve().name} ({len(features)} frames at {args.sample_fps} fps)"
    projection = Projection.fit(features, dim=args.dim, whiten=not args.no_whiten, source=source)
    projection.save(args.model_dir / PROJECTION_FILE)
    descriptors = [VideoDescriptors(v.video_id, v.intervals.astype(np.float32), projection.apply(v.embeddings)) for v in videos]
    save_noise_set(args.model_dir / NOISE_FILE, fit_noise_set(descriptors, max_vectors=args.noise_max, seed=0))
    data = json.loads(manifest_file.read_text(encoding="utf-8"))
    data["projection"] = PROJECTION_FILE
    data["noise_set"] = NOISE_FILE
    data["postprocessing_fit"] = {"source": source, "dim": args.dim, "whiten": not args.no_whiten}
    manifest_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.model_dir / PROJECTION_FILE} ({features.shape[1]} -> {args.dim} dims) and {args.model_dir / NOISE_FILE}; {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
