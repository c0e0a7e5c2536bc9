"""Runtime benchmark: decode-only, inference-only and end-to-end throughput on the same videos.

    python -m runtime.bench --videos DIR --backends gpu,gpu-serial,cpu,naive --json OUT [--limit N] [--model-dir DIR]

End-to-end modes:

* ``gpu``: NVDEC sessions + CUDA preprocessing + TensorRT FP16, overlapped (``Pipeline``).
* ``gpu-serial``: the same stages run one after another (``overlap=False``).
* ``cpu``: PyAV + ONNX Runtime through the same batching pipeline on host memory.
* ``naive``: decode a video's sampled frames, then embed them one image at a time.
* ``cpu-previous``: ``cpu`` with the previous CPU defaults (full decode, fp32 model).
* ``cpu-unbudgeted``: ``cpu`` without the thread budget (FFmpeg, the C++ resizer and ONNX
  Runtime each take all cores, ONNX Runtime threads spin): the before/after of the budget.

The ``cpu*`` modes run exactly the pipeline ``main.py`` builds (``runtime.pipeline.extractor.build_pipeline``).
* ``peer-ffmpeg`` / ``peer-torchcodec``: other decoders feeding the same model at the same batch
  size (``runtime.bench_peers``); they use ``--peer-precision`` (default: the ``cpu`` mode's model).

``cpu`` uses ``--decode-mode`` and ``--precision`` (``int8`` = ``model_assets/manifest_int8.json``).

Also measured: decode-only throughput per decoder (frames/s: the pipeline without
inference for NVDEC, thread-pooled ``PyAVDecoder.decode`` on the CPU) and inference-only
throughput (images/s) of TensorRT and ONNX Runtime on the same batch of real frames, with
the cosine similarity of their embeddings. Modes whose packages or device are missing are
reported as ``skipped`` with the reason. A table goes to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

E2E_MODES = ("gpu", "gpu-serial", "cpu", "naive", "cpu-previous", "cpu-unbudgeted", "peer-ffmpeg", "peer-torchcodec")
PRECISIONS = ("fp32", "int8")
# The CPU path's new defaults measured in benchmarks/RESULTS.md ("CPU fast path"); cpu-previous keeps full/fp32.
DEFAULT_DECODE_MODE = "auto"
DEFAULT_PRECISION = "int8"  # the CPU default since it passed the accuracy bar (benchmarks/RESULTS.md, issue 13)
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class BenchTask:
    video_id: str
    path: Path


def latency_summary(seconds: list[float]) -> dict[str, float | None]:
    """p50 / p95 / max of per-video seconds (None when empty)."""
    if not seconds:
        return {"p50": None, "p95": None, "max": None}
    values = np.asarray(seconds, dtype=np.float64)
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def gpu_status(engine: str = "trt") -> tuple[bool, str]:
    from runtime.pipeline.extractor import gpu_available

    return gpu_available(engine)


def cpu_status() -> tuple[bool, str]:
    from runtime.device.cuda import missing_gpu_packages

    missing = missing_gpu_packages(("av", "onnxruntime", "vcd_core"))
    return (False, f"missing Python packages {missing}") if missing else (True, "PyAV + ONNX Runtime")


def find_videos(directory: Path, limit: int | None) -> list[BenchTask]:
    if not directory.is_dir():
        raise ValueError(f"--videos must be a directory of .mp4 files, got {directory}")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".mp4", ".mkv", ".mov", ".avi", ".webm"))
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise ValueError(f"no videos (.mp4/.mkv/.mov/.avi/.webm) in {directory}")
    return [BenchTask(p.stem, p) for p in paths]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def _time_inference(run: Any, seconds: float, images: int) -> dict[str, float]:
    run()  # warm-up
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        run()
        count += 1
    wall = time.perf_counter() - start
    return {"images_per_s": images * count / wall, "iterations": count, "seconds": wall}


class Bench:
    """One benchmark run (see the module docstring); ``run()`` returns the JSON-ready report."""

    def __init__(self, args: argparse.Namespace) -> None:
        from runtime.model_manifest import ModelManifest, default_model_dir

        self.args = args
        self.tasks = find_videos(Path(args.videos), args.limit)
        self.model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
        self.manifest = ModelManifest.load(self.model_dir / "manifest.json")
        self._models: dict[str, Any] = {}
        self.modes = [m.strip() for m in args.backends.split(",") if m.strip()]
        bad = [m for m in self.modes if m not in E2E_MODES]
        if bad:
            raise ValueError(f"--backends must be a comma list of {E2E_MODES}, got {bad}")
        wants_gpu = any(m.startswith("gpu") for m in self.modes)
        self.gpu_ok, self.gpu_reason = gpu_status(args.gpu_engine) if wants_gpu else (False, "not requested")
        self.cpu_ok, self.cpu_reason = cpu_status()
        self._trt = None

    # -- shared components --------------------------------------------------------------

    def sampling(self) -> Any:
        from runtime.sampling import SamplingPolicy

        return SamplingPolicy(fps=self.args.fps)

    def preprocess(self) -> Any:
        from runtime.preprocess.config import PreprocessConfig

        spec = self.manifest.input
        return PreprocessConfig(height=spec.height, width=spec.width, interpolation=spec.resize, crop=spec.crop)

    def ort(self, precision: str = "fp32") -> Any:
        """An activated ONNX Runtime backend for the fp32 model or the int8 sidecar (cached per precision)."""
        if precision not in self._models:
            from runtime.infer.ort import OnnxRuntimeBackend
            from runtime.pipeline.extractor import load_manifest

            manifest = load_manifest(self.model_dir, precision)
            self._models[precision] = OnnxRuntimeBackend(manifest.onnx_path, batch_size=self.args.cpu_batch).activate()
        return self._models[precision]

    def trt(self) -> Any:
        if self._trt is None:
            from runtime.infer.trt import TensorRTBackend

            self._trt = TensorRTBackend(
                self.manifest.onnx_path, max_batch=self.args.batch, opt_batch=max(1, self.args.batch // 2), cache_dir=self.args.engine_cache
            ).activate()
        return self._trt

    # -- sections -----------------------------------------------------------------------

    def decode_only(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        modes = [m.strip() for m in self.args.decode_only_modes.split(",") if m.strip()]
        for mode in ["full"] + [m for m in modes if m != "full"]:
            key = "pyav" if mode == "full" else f"pyav-{mode}"
            out[key] = self._pyav_decode_only(mode) if self.cpu_ok else {"skipped": self.cpu_reason}
        if self.gpu_ok:
            out["nvdec"] = self._nvdec_decode_only()
        else:
            out["nvdec"] = {"skipped": self.gpu_reason}
        return out

    def _pyav_decode_only(self, mode: str) -> dict[str, Any]:
        from runtime.decode.pyav import PyAVDecoder

        decoder = PyAVDecoder(mode=mode)
        sampling, preprocess = self.sampling(), self.preprocess()
        start = time.perf_counter()
        with ThreadPoolExecutor(self.args.cpu_workers) as pool:
            results = list(pool.map(lambda t: _try(decoder.decode, t.path, sampling, preprocess), self.tasks))
        wall = time.perf_counter() - start
        done = [r for r in results if not isinstance(r, Exception)]
        frames = sum(r.images.shape[0] for r in done)
        used: dict[str, int] = {}
        for r in done:
            used[r.decode_mode] = used.get(r.decode_mode, 0) + 1
        return {"frames": frames, "seconds": wall, "frames_per_s": frames / wall, "videos_per_s": len(self.tasks) / wall,
                "workers": self.args.cpu_workers, "failures": len(results) - len(done), "decode_modes": used,
                "max_time_error": max((r.max_time_error for r in done if r.max_time_error is not None), default=None)}

    def _nvdec_decode_only(self) -> dict[str, Any]:
        from runtime.decode.nvdec import NvdecDecoder
        from runtime.device.cuda import CudaContext, CudaOps
        from runtime.pipeline.scheduler import Pipeline

        context = CudaContext.get(0)
        ops = CudaOps(context)
        decoder = NvdecDecoder()
        sampling, preprocess = self.sampling(), self.preprocess()
        pipeline = Pipeline(
            lambda worker: decoder.session(sampling, preprocess, ops),
            _NullEngine(self.args.batch),
            ops,
            (3, preprocess.height, preprocess.width),
            num_workers=self.args.workers,
        )
        results = list(pipeline.run(self.tasks))
        stats = pipeline.last_stats
        return {"frames": stats.frames, "seconds": stats.wall_seconds, "frames_per_s": stats.frames / stats.wall_seconds,
                "workers": self.args.workers, "failures": stats.failures,
                "fallbacks": sum(1 for r in results if getattr(r, "decoder", "nvdec") != "nvdec")}

    def inference_only(self) -> dict[str, Any]:
        batch = self._real_batch(self.args.infer_batch)
        if batch is None:
            return {"skipped": "no decodable frames to build a batch from"}
        out: dict[str, Any] = {"batch": int(batch.shape[0])}
        reference = None
        if self.cpu_ok:
            backend = self.ort()
            reference = backend.infer(batch)
            out["onnxruntime"] = _time_inference(lambda: backend.infer(batch), self.args.infer_seconds, batch.shape[0])
        else:
            out["onnxruntime"] = {"skipped": self.cpu_reason}
        if self.gpu_ok and self.args.gpu_engine == "torch":
            from runtime.infer.torch import TorchBackend

            backend = TorchBackend(self.manifest.onnx_path, device="cuda", max_batch=self.args.batch).activate()
            embeddings = backend.infer(batch)
            out["torch_fp16"] = _time_inference(lambda: backend.infer(batch), self.args.infer_seconds, batch.shape[0])
            if reference is not None:
                cos = _cosine(embeddings.astype(np.float64), reference.astype(np.float64))
                out["torch_fp16_vs_onnxruntime_cosine"] = {"min": float(cos.min()), "mean": float(cos.mean())}
            out["tensorrt"] = {"skipped": "--gpu-engine torch"}
        elif self.gpu_ok:
            backend = self.trt()
            embeddings = backend.infer(batch)
            out["tensorrt"] = _time_inference(lambda: backend.infer(batch), self.args.infer_seconds, batch.shape[0])
            full = np.resize(batch, (backend.max_batch, *batch.shape[1:]))
            out["tensorrt_max_batch_device"] = self._trt_device_rate(backend, full)
            out["tensorrt"]["engine"] = str(backend.engine_path)
            if reference is not None:
                cos = _cosine(embeddings.astype(np.float64), reference.astype(np.float64))
                out["tensorrt_vs_onnxruntime_cosine"] = {"min": float(cos.min()), "mean": float(cos.mean())}
        else:
            out["tensorrt"] = {"skipped": self.gpu_reason}
        return out

    def _trt_device_rate(self, backend: Any, images: np.ndarray) -> dict[str, float]:
        import pycuda.driver as cuda

        with backend.context.scope():
            device = cuda.mem_alloc(images.nbytes)
            cuda.memcpy_htod(device, np.ascontiguousarray(images))
            result = _time_inference(lambda: backend.infer_device(int(device), images.shape[0]).wait(), self.args.infer_seconds, images.shape[0])
            device.free()
        return result

    def _real_batch(self, size: int) -> np.ndarray | None:
        if not self.cpu_ok:
            return None
        from runtime.decode.pyav import PyAVDecoder

        frames = []
        for task in self.tasks:
            decoded = _try(PyAVDecoder().decode, task.path, self.sampling(), self.preprocess())
            if not isinstance(decoded, Exception):
                frames.append(decoded.images)
            if sum(f.shape[0] for f in frames) >= size:
                break
        if not frames:
            return None
        return np.ascontiguousarray(np.resize(np.concatenate(frames), (size, *frames[0].shape[1:])))

    def end_to_end(self, mode: str) -> dict[str, Any]:
        if mode.startswith("gpu") and not self.gpu_ok:
            return {"skipped": self.gpu_reason}
        if not mode.startswith("gpu") and not self.cpu_ok:
            return {"skipped": self.cpu_reason}
        if mode.startswith("peer-"):
            from runtime import bench_peers

            ok, reason = bench_peers.ffmpeg_status() if mode == "peer-ffmpeg" else bench_peers.torchcodec_status()
            if not ok:
                return {"skipped": reason}
        decode_modes: dict[str, int] = {}
        worst_error = None
        start = time.perf_counter()
        if mode == "naive":
            latencies, frames, failures = self._naive()
            busy = None
        elif mode.startswith("peer-"):
            latencies, frames, failures = self._peer(mode)
            busy = None
        else:
            pipeline = self._pipeline(mode)
            results = list(pipeline.run(self.tasks))
            latencies = [r.timings["latency"] for r in results if hasattr(r, "timings")]
            frames = pipeline.last_stats.frames
            failures = pipeline.last_stats.failures
            busy = pipeline.last_stats.engine_busy_share if mode.startswith("gpu") else None
            for r in results:
                if getattr(r, "decode_mode", ""):
                    decode_modes[r.decode_mode] = decode_modes.get(r.decode_mode, 0) + 1
                if getattr(r, "max_time_error", None) is not None:
                    worst_error = max(worst_error or 0.0, r.max_time_error)
        wall = time.perf_counter() - start
        videos = len(self.tasks)
        return {
            "precision": self._precision(mode),
            "decode_modes": decode_modes,
            "max_time_error": worst_error,
            "videos": videos,
            "failures": failures,
            "frames": frames,
            "seconds": wall,
            "videos_per_s": videos / wall,
            "frames_per_s": frames / wall,
            "seconds_per_video": latency_summary(latencies),
            "gpu_busy_share": busy,
        }

    def _pipeline(self, mode: str) -> Any:
        from runtime.pipeline.scheduler import Pipeline

        sampling, preprocess = self.sampling(), self.preprocess()
        if mode in ("gpu", "gpu-serial") and self.args.gpu_engine == "torch":
            from runtime.pipeline.devices import build_gpu_pipeline

            return build_gpu_pipeline(self.manifest, sampling, preprocess, num_workers=self.args.workers,
                                      batch_size=self.args.batch, overlap=mode == "gpu", engine="torch")
        if mode in ("gpu", "gpu-serial"):
            from runtime.decode.nvdec import NvdecDecoder
            from runtime.device.cuda import CudaOps
            from runtime.infer.trt import TensorRTEngine

            backend = self.trt()  # shared with the inference-only section (one engine build)
            decoder = NvdecDecoder()
            ops = CudaOps(backend.context)
            return Pipeline(
                lambda worker: decoder.session(sampling, preprocess, ops),
                TensorRTEngine(backend),
                ops,
                (3, preprocess.height, preprocess.width),
                num_workers=self.args.workers,
                overlap=mode == "gpu",
            )
        from runtime.pipeline.extractor import (
            ExtractorConfig,
            build_pipeline,
            load_manifest,
        )

        precision = self._precision(mode) or "fp32"
        config = ExtractorConfig(
            device="cpu",
            model_dir=self.model_dir,
            sample_fps=self.args.fps,
            decode_workers=self.args.cpu_workers,
            decode_mode="full" if mode == "cpu-previous" else self.args.decode_mode,
            batch_size=self.args.cpu_batch,
            precision=precision,  # type: ignore[arg-type]
            thread_budget=mode != "cpu-unbudgeted",
        )
        return build_pipeline(load_manifest(self.model_dir, precision), config, config.resolve("cpu"), sampling)

    def _precision(self, mode: str) -> str | None:
        if mode.startswith("gpu"):
            return None
        if mode.startswith("peer-"):
            return self.args.peer_precision or self.args.precision
        return "fp32" if mode in ("cpu-previous", "naive") else self.args.precision

    def _peer(self, mode: str) -> tuple[list[float], int, int]:
        from runtime import bench_peers

        backend, sampling, preprocess = self.ort(self._precision(mode)), self.sampling(), self.preprocess()
        if mode == "peer-ffmpeg":
            frames_of = lambda path: bench_peers.ffmpeg_frames(path, self.args.fps, preprocess.height, preprocess.width)  # noqa: E731
        else:
            frames_of = lambda path: bench_peers.torchcodec_frames(path, sampling, preprocess)  # noqa: E731
        return bench_peers.run_peer(self.tasks, frames_of, backend, self.args.cpu_workers)

    def _naive(self) -> tuple[list[float], int, int]:
        from runtime.decode.pyav import PyAVDecoder

        backend, decoder = self.ort(), PyAVDecoder()
        latencies, frames, failures = [], 0, 0
        for task in self.tasks:
            start = time.perf_counter()
            decoded = _try(decoder.decode, task.path, self.sampling(), self.preprocess())
            if isinstance(decoded, Exception):
                failures += 1
                continue
            for image in decoded.images:
                backend.infer(image[np.newaxis])
            frames += decoded.images.shape[0]
            latencies.append(time.perf_counter() - start)
        return latencies, frames, failures

    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "machine": machine_info(self.gpu_ok),
            "videos": {"directory": str(self.args.videos), "count": len(self.tasks)},
            "settings": {"fps": self.args.fps, "batch": self.args.batch, "cpu_batch": self.args.cpu_batch,
                         "decode_mode": self.args.decode_mode, "precision": self.args.precision,
                         "workers": self.args.workers, "cpu_workers": self.args.cpu_workers, "model": str(self.manifest.onnx_path)},
            "availability": {"gpu": {"ok": self.gpu_ok, "reason": self.gpu_reason}, "cpu": {"ok": self.cpu_ok, "reason": self.cpu_reason}},
        }
        report["decode_only"] = self.decode_only()
        report["inference_only"] = self.inference_only()
        report["end_to_end"] = {mode: self.end_to_end(mode) for mode in self.modes}
        report["checks"] = derived_checks(report)
        return report


class _NullPending:
    def __init__(self, count: int, dim: int) -> None:
        self._out = np.zeros((count, dim), dtype=np.float32)
        self.busy_seconds = 0.0

    def wait(self) -> np.ndarray:
        return self._out


class _NullEngine:
    """No inference: waits for the batch's writes (decode-only throughput of the same pipeline)."""

    output_dim = 1

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch

    def submit(self, buffer: Any, count: int, wait_events: list[Any]) -> _NullPending:
        for event in wait_events:
            event.synchronize()
        return _NullPending(count, self.output_dim)


def _try(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 - the benchmark counts failures
        logger.warning("%s failed: %s: %s", getattr(function, "__qualname__", function), type(exc).__name__, exc)
        return exc


def machine_info(with_gpu: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(), "gpu": None}
    if with_gpu:
        from runtime.device.cuda import CudaContext

        context = CudaContext.get(0)
        info["gpu"] = {"name": context.name, "compute_capability": list(context.compute_capability)}
        try:
            import tensorrt

            info["tensorrt"] = tensorrt.__version__
        except ImportError:
            pass
    return info


def derived_checks(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance ratios, where both sides were measured (None otherwise)."""
    e2e, decode = report["end_to_end"], report["decode_only"]

    def rate(section: dict[str, Any], key: str) -> float | None:
        return section.get(key) if isinstance(section, dict) and "skipped" not in section else None

    gpu_frames = rate(e2e.get("gpu", {}), "frames_per_s")
    nvdec_frames = rate(decode.get("nvdec", {}), "frames_per_s")
    gpu_videos = rate(e2e.get("gpu", {}), "videos_per_s")
    naive_videos = rate(e2e.get("naive", {}), "videos_per_s")
    cosine = report["inference_only"].get("tensorrt_vs_onnxruntime_cosine")
    worst = e2e.get("gpu", {}).get("seconds_per_video", {}).get("max") if "skipped" not in e2e.get("gpu", {"skipped": 1}) else None
    return {
        "gpu_over_nvdec_decode_only": gpu_frames / nvdec_frames if gpu_frames and nvdec_frames else None,
        "gpu_over_naive": gpu_videos / naive_videos if gpu_videos and naive_videos else None,
        "trt_vs_ort_min_cosine": cosine["min"] if cosine else None,
        "gpu_worst_seconds_per_video": worst,
    }


def format_table(report: dict[str, Any]) -> str:
    """Human-readable summary of a report."""

    def num(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [f"{'end-to-end':<15} {'videos/s':>10} {'frames/s':>10} {'p50 s':>8} {'p95 s':>8} {'max s':>8} {'gpu busy':>9}  note"]
    for mode, row in report["end_to_end"].items():
        if "skipped" in row:
            lines.append(f"{mode:<15} {'':>10} {'':>10} {'':>8} {'':>8} {'':>8} {'':>9}  skipped: {row['skipped']}")
            continue
        spv = row["seconds_per_video"]
        busy = "-" if row["gpu_busy_share"] is None else f"{row['gpu_busy_share']:.0%}"
        note = " ".join(filter(None, [row.get("precision") or "", ",".join(row.get("decode_modes", {})),
                                       f"{row['failures']} failed" if row["failures"] else ""]))
        lines.append(f"{mode:<15} {num(row['videos_per_s'], 2):>10} {num(row['frames_per_s']):>10} {num(spv['p50'], 3):>8} {num(spv['p95'], 3):>8} {num(spv['max'], 3):>8} {busy:>9}  {note}")
    measured = {mode: row["videos_per_s"] for mode, row in report["end_to_end"].items() if "skipped" not in row}
    if "cpu" in measured and len(measured) > 1:
        lines.append("cpu videos/s over: " + ", ".join(f"{mode} {measured['cpu'] / rate:.2f}x" for mode, rate in measured.items() if mode != "cpu"))
    lines.append("")
    lines.append(f"{'decode-only':<18} {'frames/s':>10}  modes used")
    for name, row in report["decode_only"].items():
        used = ", ".join(f"{m} {n}" for m, n in row.get("decode_modes", {}).items())
        lines.append(f"{name:<18} {num(row.get('frames_per_s')):>10}  " + (f"skipped: {row['skipped']}" if "skipped" in row else used))
    lines.append("")
    inference = report["inference_only"]
    lines.append(f"{'inference':<12} {'images/s':>10}  (batch {inference.get('batch', '-')})")
    for name in ("onnxruntime", "tensorrt", "tensorrt_max_batch_device"):
        row = inference.get(name)
        if isinstance(row, dict):
            lines.append(f"{name:<12} {num(row.get('images_per_s')):>10}" + (f"  skipped: {row['skipped']}" if "skipped" in row else ""))
    checks = report["checks"]
    lines.append("")
    lines.append("checks: " + ", ".join(f"{k}={num(v, 4) if isinstance(v, float) else '-'}" for k, v in checks.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from runtime.decode.pyav import DECODE_MODES
    from runtime.pipeline.extractor import ExtractorConfig

    parser = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", required=True, help="directory of videos")
    parser.add_argument("--backends", default="gpu,gpu-serial,cpu,naive", help=f"comma list of {', '.join(E2E_MODES)}")
    parser.add_argument("--json", required=True, help="where to write the JSON report")
    parser.add_argument("--limit", type=int, default=None, help="use the first N videos (sorted by name)")
    parser.add_argument("--model-dir", default=None, help="model assets directory (default: the installed model_assets)")
    parser.add_argument("--fps", type=float, default=ExtractorConfig().sample_fps, help="samples per second (default: the runtime default)")
    parser.add_argument("--batch", type=int, default=256, help="TensorRT batch (engine max batch)")
    parser.add_argument("--cpu-batch", type=int, default=32, help="ONNX Runtime batch for the cpu mode")
    parser.add_argument("--infer-batch", type=int, default=64, help="batch of the TensorRT vs ONNX Runtime inference-only comparison")
    parser.add_argument("--infer-seconds", type=float, default=3.0, help="minimum timing per inference-only measurement")
    parser.add_argument("--workers", type=int, default=7, help="NVDEC sessions")
    parser.add_argument("--cpu-workers", type=int, default=None, help="PyAV decoders of the cpu modes (default: the runtime default)")
    parser.add_argument("--engine-cache", default=None, help="TensorRT engine cache directory")
    parser.add_argument("--gpu-engine", choices=["trt", "torch"], default="trt", help="engine of the gpu modes (torch: PyTorch FP16)")
    parser.add_argument("--decode-mode", choices=DECODE_MODES, default=DEFAULT_DECODE_MODE, help="PyAV decode mode of the cpu mode")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION, help="model of the cpu mode")
    parser.add_argument("--peer-precision", choices=PRECISIONS, default=None, help="model of the peer modes (default: --precision)")
    parser.add_argument("--decode-only-modes", default="full,auto", help="PyAV decode modes measured decode-only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpu_workers is None:
        from runtime.pipeline.extractor import DEFAULT_DECODE_WORKERS

        args.cpu_workers = DEFAULT_DECODE_WORKERS["cpu"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {args.limit}")
    try:
        bench = Bench(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = bench.run()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
