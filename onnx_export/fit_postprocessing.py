"""Fit the shipped postprocessing on TRAINING data only: the projection and the score-normalisation noise set.

    # learned discriminative whitening on synthetic copies of the training pack (the shipped default):
    python -m onnx_export.training_pack --out .train-pack
    python -m onnx_export.fit_postprocessing --pack .train-pack/vcd-train-pack-v1.tar --model-dir model_assets
    # PCA whitening on training references (the former default):
    python -m onnx_export.fit_postprocessing --train-dir DATASET/train --model-dir model_assets --method pca

``--pack``: the training pack's images (Big Buck Bunny training region + openly licensed stills +
procedural images, ``onnx_export.training_pack``) and ``--copies-per-image`` synthetic copies of each
(``onnx_export.synthetic_copies``) are embedded by the model (ONNX Runtime, CPU, the runtime's own
preprocessing). ``--train-dir``: the model runs on ``train-dir/reference/*.mp4`` at ``--sample-fps``.

``--method learned`` (needs ``--pack``) fits the supervised "learned whitening" of Radenović et al.
(see ``fit_learned_whitening``); ``--method pca`` fits PCA whitening on the originals. The noise set is
built from the projected training descriptors. Writes ``pca_whitening.npz`` (the projection; one
file format for both methods: ``y = (x - mean) @ matrix``) and ``noise_set.npz`` next to the ONNX model
and records both in ``manifest.json``. Never point this at test data (queries or the references being
searched): the challenge forbids fitting on them.
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
from runtime.io.descriptors import MAX_DESCRIPTOR_DIM, VideoDescriptors
from runtime.model_manifest import ModelManifest
from runtime.pipeline.devices import build_host_pipeline
from runtime.pipeline.extractor import preprocess_config
from runtime.postprocess.projection import Projection
from runtime.postprocess.score_normalization import fit_noise_set, save_noise_set
from runtime.preprocess.cpu import preprocess_rgb
from runtime.records import VideoEmbeddings
from runtime.sampling import SamplingPolicy

logger = logging.getLogger("onnx_export.fit_postprocessing")

PROJECTION_FILE = "pca_whitening.npz"
NOISE_FILE = "noise_set.npz"
DEFAULT_COPIES = 4
DEFAULT_SHRINKAGE = 0.1


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


def embed_images(images: list[np.ndarray], manifest: ModelManifest, batch: int = 64) -> np.ndarray:
    """Model embeddings (N, D) of RGB images of any sizes, through the runtime's preprocessing."""
    config = preprocess_config(manifest)
    out = []
    with OnnxRuntimeBackend(manifest.onnx_path) as backend:
        for start in range(0, len(images), batch):
            inputs = np.concatenate([preprocess_rgb(np.ascontiguousarray(im), config) for im in images[start:start + batch]])
            out.append(backend.infer(inputs))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def pack_embeddings(pack: Path, manifest: ModelManifest, copies_per_image: int = DEFAULT_COPIES, seed: int = 0,
                    cache: Path | None = None) -> dict[str, np.ndarray]:
    """Embeddings of the pack's images and of their synthetic copies (cached in ``cache`` when given).

    Returns:
        ``originals`` (N, D), ``copies`` (M, D), ``source`` (M,) index of each copy's original,
        ``edits`` (M,) the copy's edits joined by ``|``, ``groups`` (N,).
    """
    from onnx_export.synthetic_copies import load_pack_rgb, synthetic_copies

    key = {"pack": str(Path(pack).resolve()), "pack_bytes": Path(pack).stat().st_size, "onnx_sha256": manifest.onnx_sha256,
           "copies_per_image": copies_per_image, "seed": seed}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if json.loads(str(data["key"])) == key:
                return {k: data[k] for k in ("originals", "copies", "source", "edits", "groups")}
    images, groups, _ = load_pack_rgb(pack)
    copies = synthetic_copies(images, groups, copies_per_image=copies_per_image, seed=seed)
    logger.info("embedding %d pack images and %d synthetic copies", len(images), len(copies))
    out = {
        "originals": embed_images(images, manifest),
        "copies": embed_images([c.image for c in copies], manifest),
        "source": np.array([c.source for c in copies], np.int64),
        "edits": np.array(["|".join(c.edits) for c in copies]),
        "groups": np.array(groups),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.array(json.dumps(key)), **out)
    return out


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T


def fit_learned_whitening(originals: np.ndarray, copies: np.ndarray, source: np.ndarray, dim: int,
                          shrinkage: float = DEFAULT_SHRINKAGE, source_text: str = "") -> Projection:
    """Supervised learned whitening (Radenović, Tolias, Chum, "Fine-tuning CNN image retrieval with no human annotation", TPAMI 2018).

    With matching pairs (original i, copy of i): C_S = mean of (x_i - x_copy)(x_i - x_copy)^T, the
    intra-class (edit) covariance; every descriptor is whitened by C_S^{-1/2}, so directions in which
    edits move a descriptor are shrunk; then PCA of the whitened descriptors of all images (C_D, the
    between-image covariance) keeps the ``dim`` directions in which different images differ most.
    P = eig(C_S^{-1/2} C_D C_S^{-1/2})[:dim]^T C_S^{-1/2}; ``y = (x - mean) @ P^T``, L2-normalised.

    Args:
        originals: (N, D) L2-normalised embeddings of the training images.
        copies: (M, D) embeddings of their copies; ``source[m]`` is the original of copy m.
        dim: output dims, <= min(D, 512).
        shrinkage: C_S is regularised to (1 - s) C_S + s * mean(diag C_S) * I (the 1280-d covariance
            from a few thousand pairs is ill-conditioned; 0 = none).
        source_text: provenance stored with the projection.
    """
    originals = np.asarray(originals, np.float64)
    copies = np.asarray(copies, np.float64)
    source = np.asarray(source)
    d_in = originals.shape[1]
    if copies.shape[1] != d_in or len(source) != len(copies) or len(copies) == 0:
        raise ValueError(f"need (N, D) originals, (M, D) copies and M source indices, got {originals.shape}, {copies.shape}, {source.shape}")
    if not 0 < dim <= min(d_in, MAX_DESCRIPTOR_DIM):
        raise ValueError(f"dim must be in 1..{min(d_in, MAX_DESCRIPTOR_DIM)}, got {dim}")
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    diffs = originals[source] - copies
    c_s = diffs.T @ diffs / len(diffs)
    c_s = (1 - shrinkage) * c_s + shrinkage * np.trace(c_s) / d_in * np.eye(d_in)
    whiten = _inverse_sqrt(c_s)
    everything = np.concatenate([originals, copies])
    mean = everything.mean(axis=0)
    whitened = (everything - mean) @ whiten
    c_d = whitened.T @ whitened / len(whitened)
    values, vectors = np.linalg.eigh(c_d)
    top = vectors[:, np.argsort(values)[::-1][:dim]]
    return Projection(mean=mean.astype(np.float32), matrix=(whiten @ top).astype(np.float32), whitened=True, source=source_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--pack", type=Path, help="training pack tar (python -m onnx_export.training_pack --out DIR)")
    data.add_argument("--train-dir", type=Path, help="training split in the challenge layout (reference/*.mp4)")
    parser.add_argument("--model-dir", type=Path, default=Path("model_assets"))
    parser.add_argument("--method", choices=["learned", "pca"], default="learned")
    parser.add_argument("--dim", type=int, default=128, help="descriptor dims after the projection (<= 511 leaves room for score normalisation)")
    parser.add_argument("--shrinkage", type=float, default=DEFAULT_SHRINKAGE, help="regulariser of the edit covariance (learned whitening)")
    parser.add_argument("--copies-per-image", type=int, default=DEFAULT_COPIES, help="synthetic copies per pack image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic copies")
    parser.add_argument("--cache", type=Path, default=None, help="cache file for the pack embeddings (.npz)")
    parser.add_argument("--sample-fps", type=float, default=8.0,
                        help="training frames per second with --train-dir (the training footage is short: dense sampling gives PCA enough frames)")
    parser.add_argument("--no-whiten", action="store_true", help="PCA without whitening")
    parser.add_argument("--noise-max", type=int, default=20000, help="largest noise set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    manifest_file = args.model_dir / "manifest.json"
    manifest = ModelManifest.load(manifest_file)
    if args.pack is not None:
        emb = pack_embeddings(args.pack, manifest, args.copies_per_image, args.seed, args.cache)
        source = (f"training pack {args.pack.name} ({len(emb['originals'])} images, {len(emb['copies'])} synthetic copies, "
                  f"seed {args.seed})")
        noise_parts = [VideoDescriptors("pack", np.zeros((len(emb["originals"]), 2), np.float32), emb["originals"])]
        if args.method == "learned":
            projection = fit_learned_whitening(emb["originals"], emb["copies"], emb["source"], args.dim, args.shrinkage,
                                               source_text=f"learned whitening (shrinkage {args.shrinkage}) on {source}")
        else:
            projection = Projection.fit(emb["originals"], dim=args.dim, whiten=not args.no_whiten, source=source)
    else:
        if args.method != "pca":
            parser.error("--method learned needs --pack (it is fitted on synthetic copies)")
        videos = train_embeddings(args.train_dir, manifest, args.sample_fps)
        features = np.concatenate([v.embeddings for v in videos])
        source = f"{len(videos)} training references from {args.train_dir.resolve().name} ({len(features)} frames at {args.sample_fps} fps)"
        projection = Projection.fit(features, dim=args.dim, whiten=not args.no_whiten, source=source)
        noise_parts = [VideoDescriptors(v.video_id, v.intervals.astype(np.float32), v.embeddings) for v in videos]
    projection.save(args.model_dir / PROJECTION_FILE)
    descriptors = [VideoDescriptors(v.video_id, v.timestamps, projection.apply(v.features)) for v in noise_parts]
    save_noise_set(args.model_dir / NOISE_FILE, fit_noise_set(descriptors, max_vectors=args.noise_max, seed=0))
    data = json.loads(manifest_file.read_text(encoding="utf-8"))
    data["projection"] = PROJECTION_FILE
    data["noise_set"] = NOISE_FILE
    fit = {"source": source, "method": args.method, "dim": args.dim, "whiten": args.method == "learned" or not args.no_whiten}
    if args.pack is not None:
        fit.update({"pack": args.pack.name, "copies_per_image": args.copies_per_image, "seed": args.seed})
    if args.method == "learned":
        fit["shrinkage"] = args.shrinkage
    data["postprocessing_fit"] = fit
    manifest_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.model_dir / PROJECTION_FILE} ({projection.input_dim} -> {args.dim} dims, {args.method}) and "
          f"{args.model_dir / NOISE_FILE}; {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
