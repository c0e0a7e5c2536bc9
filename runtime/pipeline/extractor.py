"""Assembles decode -> sample -> preprocess -> infer -> postprocess from the shipped model assets."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.io.descriptors import VideoDescriptors
from runtime.model_manifest import ModelManifest, default_model_dir, sha256_of_file
from runtime.pipeline.devices import build_gpu_pipeline, build_host_pipeline
from runtime.pipeline.scheduler import Pipeline
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.postprocessor import Postprocessor
from runtime.postprocess.projection import Projection
from runtime.postprocess.score_normalization import (
    ScoreNormalization,
    load_noise_set,
    normalize_queries,
    normalize_references,
)
from runtime.preprocess.config import PreprocessConfig
from runtime.records import VideoEmbeddings, VideoFailure, VideoTask
from runtime.sampling import SamplingPolicy

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "gpu"]


@dataclass(frozen=True)
class ExtractorConfig:
    """Settings of the descriptor extractor (each also a command-line option).

    The defaults are the best configuration of the ablation in benchmarks/RESULTS.md: sample
    2 frames/s, keep the ceil(duration) most novel ones per video while pruning near-duplicates
    (cosine >= 0.9), PCA-whiten to 128 dims, add the score-normalisation dimension.
    """

    device: Device = "auto"
    model_dir: Path | None = None
    sample_fps: float = 2.0
    descriptors_per_second: float = 1.0
    duplicate_similarity: float = 0.9
    decode_workers: int = 1
    decode_timeout: float | None = 600.0
    intra_op_threads: int = 0
    batch_size: int = 32
    score_normalization: bool = True

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        d = ExtractorConfig()
        group = parser.add_argument_group("extraction")
        group.add_argument("--device", choices=["auto", "cpu", "gpu"], default=d.device,
                           help="gpu = NVDEC + TensorRT, cpu = PyAV + ONNX Runtime, auto = gpu when available")
        group.add_argument("--model-dir", type=Path, default=None, help="model assets (default: the shipped model_assets/)")
        group.add_argument("--sample-fps", type=float, default=d.sample_fps, help="frames sampled per second before the budget")
        group.add_argument("--descriptors-per-second", type=float, default=d.descriptors_per_second,
                           help="per-video cap, as a fraction of ceil(duration) (<= 1)")
        group.add_argument("--duplicate-similarity", type=float, default=d.duplicate_similarity,
                           help="drop samples at least this similar to a kept one of the same video (1 = off)")
        group.add_argument("--decode-workers", type=int, default=d.decode_workers, help="videos decoded concurrently")
        group.add_argument("--decode-timeout", type=float, default=d.decode_timeout, help="seconds per video before giving up")
        group.add_argument("--threads", dest="intra_op_threads", type=int, default=d.intra_op_threads,
                           help="ONNX Runtime threads (0 = all cores)")
        group.add_argument("--batch-size", type=int, default=d.batch_size, help="images per inference call")
        group.add_argument("--no-score-norm", dest="score_normalization", action="store_false",
                           help="do not add the score-normalisation dimension (noise set of training references)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExtractorConfig:
        return cls(**{k: getattr(args, k) for k in cls.__dataclass_fields__ if hasattr(args, k)})


@dataclass
class Extractor:
    """A ready pipeline plus the postprocessing that turns its embeddings into descriptors."""

    pipeline: Pipeline
    postprocessor: Postprocessor
    manifest: ModelManifest
    config: ExtractorConfig
    device: str
    model_dim: int
    sampling: SamplingPolicy = field(default_factory=SamplingPolicy)
    noise: np.ndarray | None = None
    normalization: ScoreNormalization | None = None

    @property
    def output_dim(self) -> int:
        return self.postprocessor.output_dim(self.model_dim) + (1 if self.normalization is not None else 0)

    def run(self, tasks: Iterable[VideoTask]) -> Iterator[VideoEmbeddings | VideoFailure]:
        return self.pipeline.run(tasks)  # type: ignore[attr-defined]

    def finalize(self, video: VideoEmbeddings, duration: float | None, role: str = "query") -> VideoDescriptors:
        """Final descriptors of one video; ``role`` (query/reference) picks the score-normalisation side."""
        descriptors = self.postprocessor(video, duration)
        if self.normalization is None or len(descriptors) == 0:
            if self.normalization is not None:  # keep the dimension consistent for empty videos
                return VideoDescriptors(descriptors.video_id, descriptors.timestamps, np.zeros((0, self.output_dim), np.float32))
            return descriptors
        if role == "query":
            return normalize_queries([descriptors], self.noise, self.normalization)[0]
        if role == "reference":
            return normalize_references([descriptors], self.normalization)[0]
        raise ValueError(f"role must be 'query' or 'reference', got {role!r}")

    def fingerprint(self) -> dict:
        """Everything that changes the descriptors (used to decide whether stored results are reusable)."""
        return {
            "onnx_sha256": self.manifest.onnx_sha256,
            "projection": self.manifest.projection and sha256_of_file(self.manifest.projection_path),
            "sampling": asdict(self.sampling),
            "budget": asdict(self.postprocessor.budget),
            "score_normalization": asdict(self.normalization) if self.normalization else None,
            "noise_set": self.normalization and self.manifest.noise_set and sha256_of_file(self.manifest.noise_set_path),
            "device": self.device,
        }

    def describe(self) -> str:
        return (f"device={self.device} model={self.manifest.name} dim={self.model_dim}->{self.output_dim} "
                f"sample_fps={self.sampling.fps} budget={self.postprocessor.budget} score_norm={self.normalization}")


def preprocess_config(manifest: ModelManifest) -> PreprocessConfig:
    """The model's input contract as a preprocessing config."""
    return PreprocessConfig(
        height=manifest.input.height,
        width=manifest.input.width,
        interpolation=manifest.input.resize,
        crop=manifest.input.crop,
        dtype="uint8",
    )


def load_postprocessor(manifest: ModelManifest, budget: BudgetConfig) -> Postprocessor:
    projection = Projection.load(manifest.projection_path) if manifest.projection_path is not None else None
    return Postprocessor(projection=projection, budget=budget)


def gpu_available() -> tuple[bool, str]:
    """Whether the GPU path can run here, and why not."""
    try:
        from runtime.device.cuda import gpu_runtime_status
    except ImportError as exc:
        return False, f"GPU support not importable: {exc}"
    return gpu_runtime_status()


def build_extractor(config: ExtractorConfig) -> Extractor:
    """Load the model assets and build the pipeline for the requested device."""
    model_dir = config.model_dir or default_model_dir()
    manifest = ModelManifest.load(Path(model_dir) / "manifest.json")
    manifest.verify()
    sampling = SamplingPolicy(fps=config.sample_fps)
    budget = BudgetConfig(config.descriptors_per_second, config.duplicate_similarity)
    postprocessor = load_postprocessor(manifest, budget)
    model_dim = manifest.output.dim
    postprocessor.output_dim(model_dim)  # fail early when the descriptors would exceed 512 dims
    preprocess = preprocess_config(manifest)
    device = config.device
    if device in ("auto", "gpu"):
        ok, reason = gpu_available()
        if not ok:
            if device == "gpu":
                raise ValueError(f"--device gpu requested but the GPU path is unavailable: {reason}")
            logger.info("GPU path unavailable (%s); using the CPU", reason)
            device = "cpu"
        else:
            device = "gpu"
    if device == "gpu":
        pipeline = build_gpu_pipeline(manifest, sampling, preprocess, decode_timeout=config.decode_timeout)
    else:
        from runtime.decode.pyav import PyAVDecoder
        from runtime.infer.ort import OnnxRuntimeBackend
        backend = OnnxRuntimeBackend(manifest.onnx_path, intra_op_threads=config.intra_op_threads, batch_size=config.batch_size)
        pipeline = build_host_pipeline(
            PyAVDecoder(timeout_seconds=config.decode_timeout),
            backend,
            sampling,
            preprocess,
            decode_workers=config.decode_workers,
            batch_size=config.batch_size,
        )
    noise, normalization = None, None
    if config.score_normalization:
        if manifest.noise_set_path is None:
            raise ValueError("score normalisation needs a noise set in the model assets (manifest 'noise_set'); use --no-score-norm")
        noise, normalization = load_noise_set(manifest.noise_set_path), ScoreNormalization()
    return Extractor(pipeline, postprocessor, manifest, config, device, model_dim, sampling, noise, normalization)
