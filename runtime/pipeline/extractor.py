"""Assembles decode -> sample -> preprocess -> infer -> postprocess from the shipped model assets."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.decode.pyav import DECODE_MODES
from runtime.infer.base import BackendError, InferenceBackend
from runtime.io.descriptors import VideoDescriptors
from runtime.model_manifest import (
    MANIFEST_FILENAME,
    ModelManifest,
    default_model_dir,
    sha256_of_file,
)
from runtime.pipeline.devices import build_gpu_pipeline, build_host_pipeline
from runtime.pipeline.scheduler import Pipeline
from runtime.pipeline.turned_views import TurnedViews
from runtime.postprocess.budget import BudgetConfig
from runtime.postprocess.layout_budget import LayoutPostprocessor
from runtime.postprocess.orientation import PROBE_FILE, OrientationProbe
from runtime.postprocess.postprocessor import Postprocessor
from runtime.postprocess.projection import Projection
from runtime.postprocess.score_normalization import (
    ScoreNormalization,
    load_noise_set,
    normalize_queries,
    normalize_references,
)
from runtime.preprocess.config import PreprocessConfig
from runtime.preprocess.layout import LayoutSettings
from runtime.preprocess.preselect import PreselectConfig
from runtime.records import VideoEmbeddings, VideoFailure, VideoTask
from runtime.sampling import SamplingPolicy

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "gpu"]
Engine = Literal["auto", "ort", "torch", "trt"]
Precision = Literal["auto", "fp32", "fp16", "int8"]

# What each device runs (the first entry is the default): the CPU path feeds host batches to
# ONNX Runtime or PyTorch; the GPU path feeds device batches to TensorRT or PyTorch.
DEVICE_ENGINES: dict[str, tuple[str, ...]] = {"cpu": ("ort", "torch"), "gpu": ("trt", "torch")}
DEVICE_PRECISIONS: dict[str, tuple[str, ...]] = {"cpu": ("fp32", "int8"), "gpu": ("fp16", "fp32")}
# The orientation probe needs a video's model inputs after inference: kept up to this size per video
# (about 7 minutes at 2 samples/s of 224 x 224 inputs); a longer video is not probed, and its notes say so.
KEEP_INPUTS_BYTES = 128 * 2**20
# int8 runs a separately quantised model (its own manifest next to the fp32 one).
PRECISION_MANIFESTS = {"int8": "manifest_int8.json"}
DEFAULT_DECODE_WORKERS = {"cpu": 1, "gpu": 7}  # 7 NVDEC sessions saturate an H100-class decoder
DEFAULT_BATCH_SIZE = {"cpu": 32, "gpu": 256}
_LAYOUT_GPU = "NVDEC has no layout capture yet"


def _layout_window(text: str) -> int:
    """``--layout-window``: an integer >= 0 (samples per layout window, 0 = the whole video)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (e.g. 16), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = the whole video), got {text!r}")
    return value


def _preselect_margin(text: str) -> float:
    """``--preselect-margin``: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (e.g. 0.25), got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 (e.g. 0.25), got {text!r}")
    return value


@dataclass(frozen=True)
class ExtractorConfig:
    """Settings of the descriptor extractor (each also a command-line option).

    The defaults are the best configuration of the ablation in benchmarks/RESULTS.md: sample
    2 frames/s, keep the ceil(duration) most novel ones per video while pruning near-duplicates
    (cosine >= 0.9), PCA-whiten to 128 dims, add the score-normalisation dimension. ``None``
    and ``auto`` settings take the chosen device's default (``resolve``).
    """

    device: Device = "auto"
    model_dir: Path | None = None
    sample_fps: float = 2.0
    descriptors_per_second: float = 1.0
    duplicate_similarity: float = 0.9
    decode_workers: int | None = None
    decode_timeout: float | None = 600.0
    decode_mode: str = "auto"
    intra_op_threads: int = 0
    thread_budget: bool = True
    batch_size: int | None = None
    engine: Engine = "auto"
    precision: Precision = "auto"
    engine_cache_dir: Path | None = None
    cuda_device: int = 0
    score_normalization: bool = True
    layout_views: bool = False
    layout_window: int = LayoutSettings.window_samples
    orientation_probe: bool = True
    preselect_margin: float | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        d = ExtractorConfig()
        group = parser.add_argument_group("extraction")
        group.add_argument("--device", choices=["auto", "cpu", "gpu"], default=d.device,
                           help="gpu = NVDEC + CUDA kernels + TensorRT/PyTorch, cpu = PyAV + C++ + ONNX Runtime/PyTorch, "
                                "auto = gpu when it is ready (default: %(default)s)")
        group.add_argument("--model-dir", type=Path, default=None, help="model assets (default: the shipped model_assets/)")
        group.add_argument("--sample-fps", type=float, default=d.sample_fps,
                           help="frames sampled per second before the budget (default: %(default)s)")
        group.add_argument("--descriptors-per-second", type=float, default=d.descriptors_per_second,
                           help="per-video cap, as a fraction of ceil(duration) (<= 1; default: %(default)s)")
        group.add_argument("--duplicate-similarity", type=float, default=d.duplicate_similarity,
                           help="drop samples at least this similar to a kept one of the same video (1 = off; default: %(default)s)")
        group.add_argument("--decode-workers", "--decode-sessions", dest="decode_workers", type=int, default=None,
                           help="videos decoded concurrently: PyAV decoders on the CPU, NVDEC sessions on the GPU "
                                f"(default: {DEFAULT_DECODE_WORKERS['cpu']} on the CPU, {DEFAULT_DECODE_WORKERS['gpu']} on the GPU)")
        group.add_argument("--decode-timeout", type=float, default=d.decode_timeout,
                           help="seconds per video before giving up (default: %(default)s)")
        group.add_argument("--decode-mode", choices=list(DECODE_MODES), default=d.decode_mode,
                           help="PyAV frame skipping (Note [Decode modes] in runtime/decode/pyav.py); auto skips only "
                                "what the sampler's timing tolerance allows (default: %(default)s)")
        group.add_argument("--threads", dest="intra_op_threads", type=int, default=d.intra_op_threads,
                           help="CPU inference threads (default 0: every core of the CPU affinity, threads not spinning)")
        group.add_argument("--no-thread-budget", dest="thread_budget", action="store_false",
                           help="let FFmpeg, the C++ resizer and ONNX Runtime each pick their own thread counts "
                                "(the behaviour before the thread budget; for comparisons)")
        group.add_argument("--batch-size", type=int, default=None,
                           help=f"images per inference batch (default: {DEFAULT_BATCH_SIZE['cpu']} on the CPU, {DEFAULT_BATCH_SIZE['gpu']} on the GPU)")
        group.add_argument("--engine", choices=["auto", "ort", "torch", "trt"], default=d.engine,
                           help="inference engine: ort or torch on the CPU, trt or torch on the GPU (default auto: ort / trt)")
        group.add_argument("--precision", choices=["auto", "fp32", "fp16", "int8"], default=d.precision,
                           help="inference precision: fp16 or fp32 on the GPU, fp32 or int8 (the quantised model) on the CPU "
                                "(default auto: fp16 on the GPU; int8 on the CPU with ONNX Runtime when the model directory has "
                                "manifest_int8.json, else fp32)")
        group.add_argument("--engine-cache-dir", type=Path, default=None,
                           help="TensorRT engine and timing cache directory (default: ~/.cache/vcd-runtime/trt)")
        group.add_argument("--cuda-device", type=int, default=d.cuda_device, help="CUDA device ordinal (default: %(default)s)")
        group.add_argument("--no-score-norm", dest="score_normalization", action="store_false",
                           help="do not add the score-normalisation dimension (noise set of training references)")
        group.add_argument("--layout-views", action="store_true",
                           help="find the copied picture inside the frame (uniform borders, stacks and grids, picture-in-picture, "
                                "content turned by 90 degrees) and embed its parts as extra descriptors of the same timestamps, "
                                "within the per-video budget; the decisions (one per time window: --layout-window) are recorded "
                                f"per video. Apply it to queries and references alike. CPU path only ({_LAYOUT_GPU})")
        group.add_argument("--layout-window", type=_layout_window, default=d.layout_window, metavar="N",
                           help="with --layout-views, decide the views per window of N consecutive samples (a copy is often "
                                "a segment of the video; Note [Layout windows] in runtime/preprocess/layout.py); "
                                "0 = one decision per video (default: %(default)s)")
        group.add_argument("--no-orientation-probe", dest="orientation_probe", action="store_false",
                           help="with --layout-views, do not look for windows turned by 90 degrees (the orientation probe "
                                f"{PROBE_FILE} of the model directory: runtime/pipeline/turned_views.py)")
        group.add_argument("--preselect-margin", type=_preselect_margin, default=d.preselect_margin, metavar="M",
                           help="embed only the ceil(cap * (1 + M)) samples per video a pixel signature finds most novel, "
                                "cap being the descriptor budget (Note [Pre-selection] in runtime/preprocess/preselect.py); "
                                "CPU path, whole frames only (default: off, every sample is embedded)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExtractorConfig:
        return cls(**{k: getattr(args, k) for k in cls.__dataclass_fields__ if hasattr(args, k)})

    def layout(self) -> LayoutSettings | None:
        """The layout-view settings (``--layout-views``), None when the option is off."""
        return LayoutSettings(window_samples=self.layout_window) if self.layout_views else None

    def probes_orientation(self) -> bool:
        """Whether turned windows are looked for (``--layout-views`` without ``--no-orientation-probe``)."""
        return self.layout_views and self.orientation_probe

    def layout_problem(self, device: str) -> str | None:
        """Why ``--layout-views`` cannot run on ``device`` (``cpu``/``gpu``), None when it can or is off."""
        if self.layout_views and device == "gpu":
            return f"--layout-views runs on the CPU path only ({_LAYOUT_GPU}); use --device cpu"
        return None

    def preselect(self) -> PreselectConfig | None:
        """The pre-selection settings (``--preselect-margin``), None when the option is off."""
        if self.preselect_margin is None:
            return None
        return PreselectConfig(margin=self.preselect_margin, descriptors_per_second=self.descriptors_per_second)

    def auto_precision(self, device: str, engine: str) -> str:
        """``--precision auto``: fp16 on the GPU; on the CPU the int8 model where ONNX Runtime runs it and the
        model directory has one (within the accuracy bar and ~2x faster: benchmarks/RESULTS.md, issue 13), else fp32."""
        if device == "cpu":
            return "int8" if engine == "ort" and manifest_path(self.model_dir, "int8").is_file() else "fp32"
        return DEVICE_PRECISIONS[device][0]

    def resolve(self, device: str) -> ResolvedSettings:
        """The settings for ``device`` (``cpu`` or ``gpu``), or ValueError naming an option the device cannot honour."""
        engines, precisions = DEVICE_ENGINES[device], DEVICE_PRECISIONS[device]
        engine = engines[0] if self.engine == "auto" else self.engine
        if engine not in engines:
            raise ValueError(f"--engine {engine} does not run on the {device} path; choose one of {list(engines)}")
        precision = self.auto_precision(device, engine) if self.precision == "auto" else self.precision
        if precision not in precisions:
            raise ValueError(f"--precision {precision} is not available on the {device} path; choose one of {list(precisions)}")
        if self.engine_cache_dir is not None and engine != "trt":
            raise ValueError(f"--engine-cache-dir applies to the TensorRT engine only (the {device} path runs {engine})")
        if self.intra_op_threads and device == "gpu":
            raise ValueError("--threads sets CPU inference threads; the GPU path runs inference on the GPU")
        if self.cuda_device != 0 and device == "cpu":
            raise ValueError(f"--cuda-device {self.cuda_device} needs the GPU path (--device gpu)")
        if (problem := self.layout_problem(device)) is not None:
            raise ValueError(problem)
        if self.preselect_margin is not None and (device == "gpu" or self.layout_views):
            raise ValueError("--preselect-margin runs on the CPU path with whole frames only (not with --device gpu or --layout-views)")
        decode_workers = self.decode_workers if self.decode_workers is not None else DEFAULT_DECODE_WORKERS[device]
        batch_size = self.batch_size if self.batch_size is not None else DEFAULT_BATCH_SIZE[device]
        if decode_workers < 1 or batch_size < 1:
            raise ValueError(f"--decode-workers and --batch-size must be >= 1, got {decode_workers} and {batch_size}")
        return ResolvedSettings(device, engine, precision, decode_workers, batch_size)


@dataclass(frozen=True)
class ResolvedSettings:
    """What one device runs with: ``ExtractorConfig.resolve``'s result."""

    device: str
    engine: str
    precision: str
    decode_workers: int
    batch_size: int


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
    settings: ResolvedSettings | None = None
    turned_views: TurnedViews | None = None

    @property
    def output_dim(self) -> int:
        return self.postprocessor.output_dim(self.model_dim) + (1 if self.normalization is not None else 0)

    def run(self, tasks: Iterable[VideoTask]) -> Iterator[VideoEmbeddings | VideoFailure]:
        results = self.pipeline.run(tasks)  # type: ignore[attr-defined]
        if self.turned_views is None:
            return results
        return (self._with_turned_views(result) for result in results)

    def _with_turned_views(self, result: VideoEmbeddings | VideoFailure) -> VideoEmbeddings | VideoFailure:
        if not isinstance(result, VideoEmbeddings) or self.turned_views is None:
            return result
        try:
            return self.turned_views(result)
        except (ValueError, BackendError) as exc:  # the video keeps the rows it has
            logger.warning("%s: the orientation probe failed (%s: %s); keeping its views without turned ones", result.video_id,
                           type(exc).__name__, exc)
            return replace(result, inputs=None, notes=(*result.notes, f"orientation probe failed: {exc}"))

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
        """Everything that changes the descriptors (used to decide whether stored results are reusable).

        Includes the package version and the ``vcd_core`` build: an upgraded install must not
        reuse per-video results of the old code. The build id is the sha256 of the loaded
        extension file, which changes with any rebuild that changes the machine code (sources,
        compiler or flags) without needing the build to stamp anything into the module.
        """
        import runtime
        from runtime._native import vcd_core

        return {
            "package_version": runtime.__version__,
            "vcd_core": {"version": vcd_core.__version__, "build_id": sha256_of_file(Path(vcd_core.__file__))},
            "onnx_sha256": self.manifest.onnx_sha256,
            "projection": self.manifest.projection and sha256_of_file(self.manifest.projection_path),
            "sampling": asdict(self.sampling),
            "budget": asdict(self.postprocessor.budget),
            "score_normalization": asdict(self.normalization) if self.normalization else None,
            "noise_set": self.normalization and self.manifest.noise_set and sha256_of_file(self.manifest.noise_set_path),
            "device": self.device,
            "engine": None if self.settings is None else [self.settings.engine, self.settings.precision],
            "decode_mode": self.config.decode_mode,
            # only with the option on, so that stores made without it stay valid
            **({"layout": asdict(layout)} if (layout := self.config.layout()) is not None else {}),
            **({"preselect": asdict(preselect)} if (preselect := self.config.preselect()) is not None else {}),
            **({"orientation_probe": sha256_of_file(self.manifest.model_dir / PROBE_FILE)} if self.turned_views is not None else {}),
        }

    def describe(self) -> str:
        settings = "" if self.settings is None else (
            f" engine={self.settings.engine} precision={self.settings.precision} "
            f"decode_workers={self.settings.decode_workers} batch={self.settings.batch_size}"
        )
        return (f"device={self.device}{settings} model={self.manifest.name} dim={self.model_dim}->{self.output_dim} "
                f"sample_fps={self.sampling.fps} budget={self.postprocessor.budget} score_norm={self.normalization} "
                f"layout_views={self.config.layout_views}"
                + (f" layout_window={self.config.layout_window} orientation_probe={self.turned_views is not None}"
                   if self.config.layout_views else ""))


def preprocess_config(manifest: ModelManifest) -> PreprocessConfig:
    """The model's input contract as a preprocessing config."""
    return PreprocessConfig(
        height=manifest.input.height,
        width=manifest.input.width,
        interpolation=manifest.input.resize,
        crop=manifest.input.crop,
        dtype="uint8",
    )


def load_postprocessor(manifest: ModelManifest, budget: BudgetConfig, layout_views: bool = False) -> Postprocessor:
    """The shipped projection and ``budget``; with ``layout_views`` the budget is shared among each video's views."""
    projection = Projection.load(manifest.projection_path) if manifest.projection_path is not None else None
    return (LayoutPostprocessor if layout_views else Postprocessor)(projection=projection, budget=budget)


def gpu_available(engine: str = "trt", device: int = 0) -> tuple[bool, str]:
    """Whether the GPU path with ``engine`` can run here, and why not."""
    from runtime.device.cuda import gpu_runtime_status

    packages = ("pycuda", "PyNvVideoCodec", "tensorrt" if engine == "trt" else "torch")
    ok, reason = gpu_runtime_status(device, packages=packages)
    if ok and engine == "torch":
        import torch

        if not torch.cuda.is_available():
            return False, f"torch {torch.__version__} has no CUDA support here"
    return ok, reason


def choose_device(config: ExtractorConfig) -> str:
    """``cpu`` or ``gpu`` for ``config.device``; ``auto`` takes the GPU only when it is ready."""
    if config.device == "cpu":
        return "cpu"
    if config.layout_views:  # before probing the GPU: the answer does not depend on it
        if (problem := config.layout_problem(config.device)) is not None:
            raise ValueError(problem)
        logger.info("--layout-views: using the CPU path (%s)", _LAYOUT_GPU)
        return "cpu"
    engine = "trt" if config.engine in ("auto", "ort") else config.engine
    ok, reason = gpu_available(engine, config.cuda_device)
    if ok:
        return "gpu"
    if config.device == "gpu":
        raise ValueError(f"--device gpu requested but the GPU is unavailable: {reason}")
    logger.info("GPU unavailable: %s; using the CPU path", reason)
    return "cpu"


def build_pipeline(manifest: ModelManifest, config: ExtractorConfig, settings: ResolvedSettings, sampling: SamplingPolicy) -> Pipeline:
    """The scheduler with the device operations ``settings`` name."""
    preprocess = preprocess_config(manifest)
    if settings.device == "gpu":
        return build_gpu_pipeline(
            manifest,
            sampling,
            preprocess,
            decode_timeout=config.decode_timeout,
            num_workers=settings.decode_workers,
            batch_size=settings.batch_size,
            engine_cache_dir=None if config.engine_cache_dir is None else str(config.engine_cache_dir),
            device=config.cuda_device,
            engine=settings.engine,
            precision=settings.precision,
        )
    from runtime.decode.pyav import PyAVDecoder
    from runtime.device.host import ThreadBudget

    if config.thread_budget:
        budget = ThreadBudget.plan(settings.decode_workers, config.intra_op_threads)
    else:  # each library's own choice (0 = all cores / library default), ONNX Runtime threads spinning
        budget = ThreadBudget(0, settings.decode_workers, 0, 0, config.intra_op_threads)
    if settings.engine == "torch":
        from runtime.infer.torch import TorchBackend

        backend: InferenceBackend = TorchBackend(manifest.onnx_path, device="cpu", intra_op_threads=budget.inference_threads)
    else:
        from runtime.infer.ort import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(
            manifest.onnx_path,
            intra_op_threads=budget.inference_threads,
            batch_size=settings.batch_size,
            allow_spinning=not config.thread_budget,
        )
    return build_host_pipeline(
        PyAVDecoder(thread_count=budget.decoder_threads, timeout_seconds=config.decode_timeout, mode=config.decode_mode),
        backend,
        sampling,
        replace(preprocess, num_threads=budget.resize_threads),
        decode_workers=settings.decode_workers,
        batch_size=settings.batch_size,
        layout=config.layout(),
        preselect=config.preselect(),
        keep_inputs_bytes=KEEP_INPUTS_BYTES if config.probes_orientation() else 0,
    )


def manifest_path(model_dir: Path | None, precision: str) -> Path:
    """Where the manifest of ``precision``'s model lives (int8 has its own quantised model)."""
    return Path(model_dir or default_model_dir()) / PRECISION_MANIFESTS.get(precision, MANIFEST_FILENAME)


def load_manifest(model_dir: Path | None, precision: str) -> ModelManifest:
    """The verified model manifest for ``precision`` (int8 has its own quantised model)."""
    path = manifest_path(model_dir, precision)
    if not path.is_file():
        raise ValueError(f"--precision {precision} needs {path}, which does not exist")
    manifest = ModelManifest.load(path)
    manifest.verify()
    return manifest


def build_extractor(config: ExtractorConfig) -> Extractor:
    """Load the model assets and build the pipeline for the requested device."""
    device = choose_device(config)
    settings = config.resolve(device)
    manifest = load_manifest(config.model_dir, settings.precision)
    sampling = SamplingPolicy(fps=config.sample_fps)
    budget = BudgetConfig(config.descriptors_per_second, config.duplicate_similarity)
    postprocessor = load_postprocessor(manifest, budget, config.layout_views)
    model_dim = manifest.output.dim
    postprocessor.output_dim(model_dim)  # fail early when the descriptors would exceed 512 dims
    probe = load_orientation_probe(manifest) if config.probes_orientation() else None
    pipeline = build_pipeline(manifest, config, settings, sampling)
    turned_views = None
    if probe is not None:
        turned_views = TurnedViews(probe, pipeline.engine.backend, config.layout_window)  # type: ignore[attr-defined]
    noise, normalization = None, None
    if config.score_normalization:
        if manifest.noise_set_path is None:
            raise ValueError("score normalisation needs a noise set in the model assets (manifest 'noise_set'); use --no-score-norm")
        noise, normalization = load_noise_set(manifest.noise_set_path), ScoreNormalization()
    return Extractor(pipeline, postprocessor, manifest, config, device, model_dim, sampling, noise, normalization, settings, turned_views)


def load_orientation_probe(manifest: ModelManifest) -> OrientationProbe:
    """The orientation probe next to the model (``PROBE_FILE``), checked against it."""
    path = manifest.model_dir / PROBE_FILE
    if not path.is_file():
        raise ValueError(f"--layout-views looks for turned windows with {path}, which does not exist; fit one "
                         "(python -m onnx_export.fit_orientation) or pass --no-orientation-probe")
    probe = OrientationProbe.load(path)
    if probe.model_sha256 and manifest.onnx_sha256 not in probe.model_sha256:
        raise ValueError(f"{path} was fitted for other models than {manifest.onnx_file}; refit it or pass --no-orientation-probe")
    if probe.dim != manifest.output.dim:
        raise ValueError(f"{path} takes {probe.dim}-d embeddings, the model gives {manifest.output.dim}")
    return probe
