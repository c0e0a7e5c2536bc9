"""Fit the orientation probe (``runtime.postprocess.orientation``) and write it next to the model.

    python -m onnx_export.fit_orientation --pack PACK.tar [--train-dir DIR ...] [--out model_assets/orientation_probe.npz]

Training data: the pack's natural images (video frames and stills; the procedural images have no
up) and the frames of training references (``DIR/reference/*.mp4`` at 2 samples/s, e.g. a
mini-VSC build's ``train`` split, never its queries or references), each embedded as it is and
turned by one, two and three quarters, by every model the probe is for (the fp32 model and its
int8 quantisation: their embeddings differ a little). The probe is a logistic regression, upright
(label 1) against turned (0), on L2-normalised embeddings, classes balanced. ``--screen-logit`` and
``--margin`` and ``--flip-margin`` are the decision thresholds of Note [Orientation decision], chosen on the mini-VSC
dev build (``benchmarks/orientation_eval.py``, ``benchmarks/RESULTS.md``, issue 18).
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
from runtime.model_manifest import ModelManifest
from runtime.pipeline.extractor import load_manifest, preprocess_config
from runtime.postprocess.orientation import PROBE_FILE, OrientationProbe
from runtime.postprocess.projection import l2_normalize
from runtime.preprocess.cpu import preprocess_rgb
from runtime.preprocess.layout import turn_images
from runtime.sampling import SamplingPolicy

logger = logging.getLogger("onnx_export.fit_orientation")

TRAIN_TURNS = (0, 1, 2, 3)
DEFAULT_SCREEN_LOGIT = 0.0  # chosen on the mini-VSC dev build (seed 1): benchmarks/RESULTS.md, issue 18
DEFAULT_MARGIN = 0.5
DEFAULT_FLIP_MARGIN = 1.0  # the smallest margin on the dev build with no window flipped that has no vflip under it
NATURAL_KINDS = ("video_frame", "still")


def pack_inputs(pack: Path, manifest: ModelManifest) -> np.ndarray:
    """Model inputs (N, 3, H, W) uint8 of the pack's natural images."""
    import tarfile

    from onnx_export.synthetic_copies import load_pack_rgb
    from onnx_export.training_pack import MANIFEST_MEMBER

    with tarfile.open(pack) as tar:
        entries = json.loads(tar.extractfile(MANIFEST_MEMBER).read())["images"]
    images, _, ids = load_pack_rgb(pack)
    natural = {e["id"] for e in entries if e["source"]["kind"] in NATURAL_KINDS}
    config = preprocess_config(manifest)
    return np.concatenate([preprocess_rgb(np.ascontiguousarray(im), config) for im, i in zip(images, ids) if i in natural])


def video_inputs(train_dir: Path, manifest: ModelManifest, fps: float = 2.0) -> np.ndarray:
    """Model inputs of the training references' frames at ``fps``."""
    decoder, config, out = PyAVDecoder(), preprocess_config(manifest), []
    for task in video_tasks(train_dir, "reference"):
        out.append(decoder.decode(task.path, SamplingPolicy(fps=fps), config).images)
    return np.concatenate(out)


def turned_features(inputs: np.ndarray, manifests: list[ModelManifest], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised embeddings, upright labels) of ``inputs`` in every turn of ``TRAIN_TURNS`` by every model."""
    features, labels = [], []
    for manifest in manifests:
        with OnnxRuntimeBackend(manifest.onnx_path, batch_size=batch) as backend:
            for k in TRAIN_TURNS:
                features.append(l2_normalize(backend.infer(turn_images(inputs, k))))
                labels.append(np.full(len(inputs), int(k == 0)))
    return np.concatenate(features), np.concatenate(labels)


def fit_probe(features: np.ndarray, labels: np.ndarray, c: float, screen_logit: float, margin: float,
              model_sha256: tuple[str, ...], flip_margin: float | None = DEFAULT_FLIP_MARGIN) -> OrientationProbe:
    """Logistic regression upright vs turned (classes balanced) as an ``OrientationProbe``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    model.fit(features, labels)
    return OrientationProbe(model.coef_[0].astype(np.float32), float(model.intercept_[0]), screen_logit, margin, model_sha256, flip_margin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=None, help="training pack tar (onnx_export.training_pack)")
    parser.add_argument("--train-dir", type=Path, nargs="*", default=[], help="directories with reference/*.mp4 training footage")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], help="models whose embeddings train the probe")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 regularisation of the logistic regression")
    parser.add_argument("--screen-logit", type=float, default=DEFAULT_SCREEN_LOGIT)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--flip-margin", type=float, default=DEFAULT_FLIP_MARGIN,
                        help="margin for calling a window upside down (negative: never; the half turn is then only a veto)")
    parser.add_argument("--out", type=Path, default=None, help=f"output (default: MODEL_DIR/{PROBE_FILE})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.pack is None and not args.train_dir:
        parser.error("give --pack and/or --train-dir")
    manifests = [load_manifest(args.model_dir, p) for p in args.precisions]
    parts = ([pack_inputs(args.pack, manifests[0])] if args.pack else []) + [video_inputs(d, manifests[0]) for d in args.train_dir]
    inputs = np.concatenate(parts)
    logger.info("fitting on %d images x %d turns x %d models", len(inputs), len(TRAIN_TURNS), len(manifests))
    features, labels = turned_features(inputs, manifests)
    probe = fit_probe(features, labels, args.c, args.screen_logit, args.margin, tuple(m.onnx_sha256 for m in manifests),
                      args.flip_margin if args.flip_margin >= 0 else None)
    out = args.out or manifests[0].model_dir / PROBE_FILE
    probe.save(out)
    accuracy = float(np.mean((probe.logits(features) > 0) == labels.astype(bool)))
    print(json.dumps({"out": str(out), "images": len(inputs), "training_accuracy": round(accuracy, 4),
                      "screen_logit": probe.screen_logit, "margin": probe.margin, "flip_margin": probe.flip_margin}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
