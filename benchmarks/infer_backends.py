"""Inference throughput of the backends side by side: ONNX Runtime, PyTorch, TensorRT.

Every requested backend runs in the same process on the same images (uint8, seeded random:
a CNN's speed does not depend on content), batch size by batch size, in interleaved rounds
(backend A, B, C, A, B, C, ...) so that drift of a shared machine's load hits all of them
alike; the reported figure is the median round. Backends that cannot run here (package
missing, no CUDA device, execution provider absent) are listed under ``skipped`` with the
reason. Each result also records the agreement with ONNX Runtime FP32 on the CPU (minimum
cosine over one batch) unless ``--no-check``.

Backends:
  ort        ONNX Runtime, CPU execution provider, FP32
  ort-cuda   ONNX Runtime, CUDA execution provider, FP32
  torch      PyTorch: FP16 + CUDA graphs on a CUDA device, else FP32 on the CPU
  torch-cpu  PyTorch FP32 on the CPU
  trt        TensorRT FP16 (engine built or loaded from the cache; minutes when cold)

``--input device`` times the GPU backends on batches already in device memory (what the GPU
pipeline does: ``TensorRTEngine`` / ``TorchEngine`` on a pycuda buffer, two batches in
flight); ``host`` (default) times ``infer`` on numpy batches, host-device copies included.

``--models NAME=MANIFEST,...`` compares models instead (int8 vs fp32, input sizes): ONNX Runtime
on the CPU for each, on real frames decoded from ``--videos`` at 2 samples/s and preprocessed to
each model's own input size (the same frames for every model), in the same interleaved rounds;
ratios are to the first model.

Example::

    python -m benchmarks.infer_backends --backends ort,torch --batch-sizes 32 --json out.json
    python -m benchmarks.infer_backends --models fp32=model_assets,int8=model_assets/manifest_int8.json \
        --videos DATASET/query --threads 2 --batch-sizes 32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.infer.base import BackendError

logger = logging.getLogger(__name__)

BACKENDS = ("ort", "ort-cuda", "torch", "torch-cpu", "trt")
DEFAULT_ONNX = Path(__file__).resolve().parent.parent / "model_assets" / "efficientnet_lite0_gem.onnx"


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_backend(name: str, onnx_path: Path, max_batch: int, threads: int) -> Any:
    """Constructs (not activates) backend ``name`` for batches up to ``max_batch``.

    Raises:
        BackendError: it cannot run here (the reason is the message).
    """
    if name in ("ort", "ort-cuda"):
        from runtime.infer.ort import OnnxRuntimeBackend

        providers = ("CUDAExecutionProvider",) if name == "ort-cuda" else ("CPUExecutionProvider",)
        return OnnxRuntimeBackend(onnx_path, providers=providers, intra_op_threads=threads, batch_size=max_batch)
    if name in ("torch", "torch-cpu"):
        from runtime.infer.torch import TorchBackend

        device = "cuda" if name == "torch" and _torch_cuda_available() else "cpu"
        return TorchBackend(onnx_path, device=device, max_batch=max_batch, intra_op_threads=threads)
    if name == "trt":
        from runtime.infer.trt import TensorRTBackend

        return TensorRTBackend(onnx_path, max_batch=max_batch, opt_batch=max_batch)
    raise ValueError(f"unknown backend {name!r}; choices: {BACKENDS}")


def _device_runner(backend: Any, images: np.ndarray) -> Callable[[], None]:
    """Times the pipeline's path: a pycuda batch buffer filled once, two submits in flight."""
    import pycuda.driver as cuda

    from runtime.device.cuda import CudaContext

    context = CudaContext.get(0)
    with context.scope():
        buffer = cuda.mem_alloc(images.nbytes)
        cuda.memcpy_htod(buffer, np.ascontiguousarray(images))
        if type(backend).__name__ == "TorchBackend":
            from runtime.infer.torch import TorchEngine

            engine: Any = TorchEngine(backend, context)
        else:
            from runtime.infer.trt import TensorRTEngine

            engine = TensorRTEngine(backend)
    count = images.shape[0]

    def run_pair() -> None:
        with context.scope():
            first = engine.submit(buffer, count, [])
            second = engine.submit(buffer, count, [])
            first.wait()
            second.wait()

    run_pair.images_per_call = 2 * count  # type: ignore[attr-defined]
    run_pair.keep = buffer  # type: ignore[attr-defined]
    return run_pair


def run(
    backends: Sequence[str],
    batch_sizes: Sequence[int],
    onnx_path: Path,
    rounds: int = 5,
    min_seconds: float = 1.0,
    warmup: int = 2,
    threads: int = 0,
    input_mode: str = "host",
    check: bool = True,
) -> dict[str, Any]:
    """Benchmarks every available backend at every batch size; returns the JSON-ready report."""
    rng = np.random.default_rng(0)
    report: dict[str, Any] = {
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        },
        "config": {"backends": list(backends), "batch_sizes": list(batch_sizes), "rounds": rounds, "min_seconds": min_seconds,
                   "threads": threads, "input": input_mode, "onnx": str(onnx_path)},
        "versions": {},
        "results": [],
        "skipped": [],
    }
    for module in ("onnxruntime", "torch", "tensorrt"):
        try:
            report["versions"][module] = __import__(module).__version__
        except ImportError:
            report["versions"][module] = None
    max_batch = max(batch_sizes)
    active: dict[str, Any] = {}
    for name in backends:
        try:
            backend = make_backend(name, onnx_path, max_batch, threads)
            start = time.perf_counter()
            backend.activate()
            active[name] = backend
            logger.info("%s: ready as %s in %.1f s", name, backend.name, time.perf_counter() - start)
        except (BackendError, ImportError, OSError) as exc:
            report["skipped"].append({"backend": name, "reason": f"{type(exc).__name__}: {exc}"})
            logger.warning("%s: skipped: %s", name, exc)
    reference = None
    if check and active:
        from runtime.infer.ort import OnnxRuntimeBackend

        probe = rng.integers(0, 256, (min(max_batch, 16), 3, 224, 224), dtype=np.uint8)
        with OnnxRuntimeBackend(onnx_path, intra_op_threads=threads) as ort:
            reference = ort.infer(probe)
    for batch in batch_sizes:
        images = rng.integers(0, 256, (batch, 3, 224, 224), dtype=np.uint8)
        runners: dict[str, tuple[Callable[[], None], int]] = {}
        modes: dict[str, str] = {}
        for name, backend in active.items():
            on_gpu = name == "trt" or getattr(backend, "device", "cpu") == "cuda"  # ort-cuda: host input only
            modes[name] = "host"
            if input_mode == "device" and on_gpu:
                modes[name] = "device"
                try:
                    runner = _device_runner(backend, images)
                    runners[name] = (runner, runner.images_per_call)  # type: ignore[attr-defined]
                    continue
                except ImportError as exc:
                    report["skipped"].append({"backend": name, "batch_size": batch, "reason": f"device input needs pycuda: {exc}"})
                    continue
            runners[name] = (lambda b=backend: b.infer(images), batch)
        for name, (runner, _) in runners.items():
            for _ in range(warmup):
                runner()
        per_round: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, (runner, per_call) in runners.items():
                calls, start = 0, time.perf_counter()
                while True:
                    runner()
                    calls += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= min_seconds:
                        break
                per_round[name].append(calls * per_call / elapsed)
        for name, (_, per_call) in runners.items():
            backend = active[name]
            entry = {
                "backend": name,
                "name": backend.name,
                "batch_size": batch,
                "input": modes[name],
                "images_per_second": statistics.median(per_round[name]),
                "images_per_second_rounds": per_round[name],
                "ms_per_batch": 1000.0 * batch / statistics.median(per_round[name]),
            }
            if reference is not None:
                out = backend.infer(probe)
                cos = np.sum(out * reference, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))
                entry["min_cosine_vs_ort_cpu_fp32"] = float(cos.min())
            report["results"].append(entry)
            logger.info("batch %d %-9s %8.1f images/s", batch, name, entry["images_per_second"])
    for backend in active.values():
        backend.deactivate()
    report["host"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def real_batch(videos: Sequence[Path], preprocess: Any, batch: int, fps: float = 2.0) -> np.ndarray:
    """``batch`` model-input frames from ``videos`` (in order, ``fps`` samples/s), preprocessed by ``preprocess``."""
    from runtime.decode.base import DecodeError
    from runtime.decode.pyav import PyAVDecoder
    from runtime.sampling import SamplingPolicy

    decoder, policy, frames, count = PyAVDecoder(), SamplingPolicy(fps=fps), [], 0
    for path in videos:
        try:
            images = decoder.decode(path, policy, preprocess).images
        except (DecodeError, OSError, ValueError) as exc:  # a bad video is skipped, the others still make the batch
            logger.warning("%s: not decodable: %s", path, exc)
            continue
        frames.append(images)
        count += images.shape[0]
        if count >= batch:
            break
    if not count:
        raise ValueError(f"no decodable frames in {len(videos)} videos")
    return np.ascontiguousarray(np.resize(np.concatenate(frames), (batch, *frames[0].shape[1:])))


def run_models(models: Sequence[tuple[str, Path]], videos: Sequence[Path], batch: int = 32, rounds: int = 5,
               min_seconds: float = 2.0, warmup: int = 2, threads: int = 2) -> dict[str, Any]:
    """ONNX Runtime (CPU) images/s of each model on the same real frames, interleaved rounds; JSON-ready."""
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.model_manifest import ModelManifest
    from runtime.pipeline.extractor import preprocess_config

    report: dict[str, Any] = {
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "config": {"models": {name: str(path) for name, path in models}, "videos": [str(v) for v in videos], "batch": batch,
                   "rounds": rounds, "min_seconds": min_seconds, "threads": threads, "provider": "CPUExecutionProvider"},
        "versions": {"onnxruntime": __import__("onnxruntime").__version__},
        "results": [],
    }
    batches: dict[tuple[int, int], np.ndarray] = {}
    runners: dict[str, tuple[Any, np.ndarray, ModelManifest]] = {}
    for name, path in models:
        manifest = ModelManifest.load(path)
        manifest.verify()
        size = (manifest.input.height, manifest.input.width)
        if size not in batches:
            batches[size] = real_batch(videos, preprocess_config(manifest), batch)
        backend = OnnxRuntimeBackend(manifest.onnx_path, intra_op_threads=threads, batch_size=batch).activate()
        runners[name] = (backend, batches[size], manifest)
        for _ in range(warmup):
            backend.infer(batches[size])
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (backend, images, _) in runners.items():
            calls, start = 0, time.perf_counter()
            while True:
                backend.infer(images)
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            per_round[name].append(calls * batch / elapsed)
    first = statistics.median(per_round[models[0][0]])
    for name, (backend, images, manifest) in runners.items():
        rate = statistics.median(per_round[name])
        report["results"].append({
            "model": name, "onnx": str(manifest.onnx_path), "onnx_sha256": manifest.onnx_sha256,
            "input": [manifest.input.height, manifest.input.width], "batch_size": batch,
            "images_per_second": rate, "images_per_second_rounds": per_round[name],
            "ms_per_batch": 1000.0 * batch / rate, f"ratio_to_{models[0][0]}": rate / first,
        })
        logger.info("%-10s %dx%d %8.1f images/s  %.2fx", name, *images.shape[2:], rate, rate / first)
        backend.deactivate()
    report["host"]["loadavg_end"] = list(os.getloadavg())
    return report


def _models(text: str) -> list[tuple[str, Path]]:
    pairs = [part.split("=", 1) for part in text.split(",") if part]
    if not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise argparse.ArgumentTypeError("expected NAME=MANIFEST_OR_DIR[,NAME=...]")
    return [(name, Path(path)) for name, path in pairs]


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return values

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=_csv(str), default=["ort", "torch"], help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--batch-sizes", type=_csv(int), default=[32], help="comma-separated batch sizes (default 32)")
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum time per backend per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per backend and batch size")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per backend (0 = library default)")
    parser.add_argument("--input", choices=("host", "device"), default="host", help="GPU backends: numpy batches or device buffers")
    parser.add_argument("--no-check", action="store_true", help="skip the cosine check against ONNX Runtime FP32")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--models", type=_models, default=None,
                        help="NAME=MANIFEST_OR_DIR,...: compare these models with ONNX Runtime on the CPU (needs --videos)")
    parser.add_argument("--videos", type=Path, default=None, help="--models: directory of videos for the real frames")
    parser.add_argument("--limit", type=int, default=8, help="--models: at most this many videos are decoded")
    args = parser.parse_args(argv)
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backends {unknown}; choices: {', '.join(BACKENDS)}")
    if any(b < 1 for b in args.batch_sizes) or args.rounds < 1 or args.min_seconds <= 0:
        parser.error("batch sizes and --rounds must be >= 1 and --min-seconds > 0")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.models is not None:
        videos = sorted(args.videos.glob("*.mp4"))[: args.limit] if args.videos is not None else []
        if not videos:
            parser.error("--models needs --videos DIR with *.mp4 files")
        report = run_models(args.models, videos, args.batch_sizes[0], args.rounds, args.min_seconds, args.warmup,
                            args.threads or 2)
    else:
        report = run(args.backends, args.batch_sizes, args.onnx, args.rounds, args.min_seconds, args.warmup, args.threads, args.input,
                     not args.no_check)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
