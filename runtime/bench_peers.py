"""Peers for ``runtime.bench``: other ways to get the same sampled frames into the same ONNX model.

* ``peer-ffmpeg``: the VSC baseline's way (``vsc2022`` ``ffmpeg_video_reader.py``): an ``ffmpeg``
  subprocess decodes the whole video, samples with the ``fps`` filter and scales to the model
  input; here raw RGB frames come back through a pipe (the baseline writes JPEG/PNG files, which
  would only be slower), then ONNX Runtime embeds them.
* ``peer-torchcodec``: torchcodec's CPU decoder (``VideoDecoder.get_frames_played_at`` at the
  sampler's times), resized by the runtime's C++ resizer, then ONNX Runtime.

Both decode ``workers`` videos ahead of inference (a bounded prefetch), as the runtime's own
pipeline does, so the comparison is of decoding/sampling and scheduling, not of concurrency.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def ffmpeg_status() -> tuple[bool, str]:
    """Whether the ``ffmpeg`` binary is on PATH."""
    path = shutil.which("ffmpeg")
    return (True, path) if path else (False, "no ffmpeg binary on PATH (apt-get install ffmpeg)")


def torchcodec_status() -> tuple[bool, str]:
    """Whether torchcodec's CPU decoder loads here (its PyPI wheels link CUDA libraries)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except ImportError as exc:
        return False, f"torchcodec not installed ({exc}); pip install torchcodec matching torch"
    except Exception as exc:  # noqa: BLE001 - torchcodec raises OSError/RuntimeError when its libraries do not load
        cause = exc.__cause__ or exc
        return False, f"torchcodec does not load: {type(exc).__name__}: {exc} (cause: {cause})"
    return True, "torchcodec CPU decoder"


def ffmpeg_frames(path: Path, fps: float, height: int, width: int, threads: int = 0) -> np.ndarray:
    """uint8 (K, 3, H, W) frames of ``path`` sampled by ffmpeg's ``fps`` filter, area-scaled."""
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", str(threads), "-i", str(path),
               "-vf", f"fps={fps},scale={width}:{height}:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed on {path}: {result.stderr.decode(errors='replace').strip()[:300]}")
    frames = np.frombuffer(result.stdout, dtype=np.uint8)
    if frames.size == 0 or frames.size % (height * width * 3):
        raise RuntimeError(f"ffmpeg returned {frames.size} bytes for {path}, not a whole number of {width}x{height} RGB frames")
    return np.ascontiguousarray(frames.reshape(-1, height, width, 3).transpose(0, 3, 1, 2))


def torchcodec_frames(path: Path, policy: Any, preprocess: Any) -> np.ndarray:
    """uint8 (K, 3, H, W) frames at the sampler's times via ``get_frames_played_at``."""
    from torchcodec.decoders import VideoDecoder

    from runtime.preprocess.cpu import preprocess_rgb
    from runtime.sampling import requested_times

    decoder = VideoDecoder(str(path), device="cpu", dimension_order="NHWC", seek_mode="approximate")
    meta = decoder.metadata
    begin = float(meta.begin_stream_seconds or 0.0)
    end = float(meta.end_stream_seconds or meta.duration_seconds or 0.0)
    times = requested_times(policy, end - begin) + begin
    batch = decoder.get_frames_played_at(times.tolist())
    return preprocess_rgb(np.ascontiguousarray(batch.data.numpy()), preprocess)


def run_peer(tasks: Iterable[Any], frames_of: Callable[[Path], np.ndarray], backend: Any, workers: int) -> tuple[list[float], int, int]:
    """Decode with ``frames_of`` on ``workers`` threads ahead of inference; embed each video's frames.

    Returns:
        (per-video seconds from decode start to embeddings, frames embedded, failures).
    """
    tasks = list(tasks)

    def decode(task: Any) -> tuple[float, np.ndarray | Exception]:
        start = time.perf_counter()
        try:
            return start, frames_of(task.path)
        except Exception as exc:  # noqa: BLE001 - counted as a failure, like the runtime's own modes
            return start, exc

    latencies, frames, failures = [], 0, 0
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.submit(decode, task) for task in tasks[:workers]]
        for i in range(len(tasks)):
            start, images = pending[i].result()
            if i + workers < len(tasks):
                pending.append(pool.submit(decode, tasks[i + workers]))
            if isinstance(images, Exception):
                failures += 1
                continue
            backend.infer(images)
            frames += images.shape[0]
            latencies.append(time.perf_counter() - start)
    return latencies, frames, failures


def plot_fastpath(report: dict[str, Any], accuracy: dict[str, dict[str, float]], out: Path) -> Path:
    """Figure: throughput per end-to-end mode and decode-only mode, and µAP against videos/s.

    Args:
        report: a ``runtime.bench`` JSON report.
        accuracy: setting name -> {"uap": ..., "videos_per_s": ...} for the decode/precision settings tried.
        out: the PNG to write.

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e = {m: r for m, r in report["end_to_end"].items() if "skipped" not in r}
    decode = {m: r for m, r in report["decode_only"].items() if "skipped" not in r}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].barh(list(e2e), [r["videos_per_s"] for r in e2e.values()], color="tab:blue")
    axes[0].set_xlabel("videos/s (end to end)")
    axes[0].set_title("end to end, same videos and model")
    axes[1].barh(list(decode), [r["frames_per_s"] for r in decode.values()], color="tab:green")
    axes[1].set_xlabel("sampled frames/s (decode only)")
    axes[1].set_title("PyAV decode modes")
    for name, point in accuracy.items():
        axes[2].scatter(point["videos_per_s"], point["uap"])
        axes[2].annotate(name, (point["videos_per_s"], point["uap"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    axes[2].set_xlabel("videos/s (end to end)")
    axes[2].set_ylabel("descriptor µAP")
    axes[2].set_title("accuracy vs throughput")
    fig.suptitle(f"CPU fast path ({report['videos']['count']} mini-VSC queries, {report['machine']['cpu_count']} cores)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
