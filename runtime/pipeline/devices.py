"""Pipelines for each device: the same scheduler with host (PyAV, C++, ONNX Runtime) or CUDA (NVDEC, kernels, TensorRT) operations."""

from __future__ import annotations

from typing import Any, Literal

from runtime.device.cuda import CudaOps
from runtime.device.host import HostOps
from runtime.pipeline.host import BackendEngine, HostDecodeSession
from runtime.pipeline.scheduler import Pipeline


def build_host_pipeline(
    decoder: Any,
    backend: Any,
    sampling: Any,
    preprocess: Any,
    decode_workers: int = 1,
    batch_size: int = 32,
    overlap: bool = True,
    layout: Any = None,
    preselect: Any = None,
    keep_inputs_bytes: int = 0,
) -> Pipeline:
    """The scheduler with host operations: ``decoder`` sessions -> numpy batches -> ``backend``.

    Args:
        decoder: a ``Decoder`` (e.g. ``PyAVDecoder``); each worker owns a session over it.
        backend: an ``InferenceBackend`` (e.g. ``OnnxRuntimeBackend``), activated here.
        sampling: ``SamplingPolicy``.
        preprocess: ``PreprocessConfig`` (model input contract).
        decode_workers: videos decoded concurrently.
        batch_size: images per inference call; batches mix frames of consecutive videos.
        overlap: False runs decode and inference one after another on the caller's thread.
        layout: ``LayoutSettings``: also embed every sample's layout views (``decoder`` must take
            ``decode(..., layout=)``: ``PyAVDecoder``); the results carry ``views`` and ``layout``.
            None = whole frames only.
        preselect: ``PreselectConfig``: embed only the samples worth it (``runtime.preprocess.preselect``);
            the results carry ``sampled``. None = every sample.
        keep_inputs_bytes: the results carry their rows' model inputs (``VideoEmbeddings.inputs``) when they take
            at most this many bytes per video (0 = never).

    Returns:
        A ``Pipeline`` whose ``run`` yields results in input order.
    """
    ops = HostOps()
    return Pipeline(
        session_factory=lambda worker: HostDecodeSession(decoder, sampling, preprocess, ops, layout=layout, preselect=preselect,
                                                          keep_inputs_bytes=keep_inputs_bytes),
        engine=BackendEngine(backend, max_batch=batch_size),
        ops=ops,
        image_shape=(3, preprocess.height, preprocess.width),
        num_workers=decode_workers,
        batch_size=batch_size,
        overlap=overlap,
    )


def build_layout_host_pipeline(
    backend: Any,
    sampling: Any,
    preprocess: Any,
    settings: Any = None,
    decode_workers: int = 1,
    batch_size: int = 32,
    decoder_options: dict[str, Any] | None = None,
    overlap: bool = True,
) -> Pipeline:
    """The host pipeline (PyAV + C++ + ``backend``) with layout views (``build_host_pipeline(layout=...)``).

    Args:
        backend: an ``InferenceBackend``, activated here.
        sampling: ``SamplingPolicy``.
        preprocess: ``PreprocessConfig``.
        settings: ``LayoutSettings`` (None = its defaults).
        decode_workers, batch_size, overlap: as ``build_host_pipeline``.
        decoder_options: ``PyAVDecoder`` keyword options (e.g. ``layout_capture_bytes``).

    Returns:
        A ``Pipeline`` whose ``run`` yields ``VideoEmbeddings`` with ``views`` (None for plain
        videos) and ``layout`` (every analysed video's decision) set.
    """
    from runtime.decode.pyav import PyAVDecoder
    from runtime.preprocess.layout import LayoutSettings

    return build_host_pipeline(PyAVDecoder(**(decoder_options or {})), backend, sampling, preprocess, decode_workers=decode_workers,
                               batch_size=batch_size, overlap=overlap, layout=settings if settings is not None else LayoutSettings())


def build_gpu_pipeline(
    manifest: Any,
    sampling: Any,
    preprocess: Any,
    decode_timeout: float | None = None,
    num_workers: int = 7,
    batch_size: int = 256,
    overlap: bool = True,
    engine_cache_dir: str | None = None,
    device: int = 0,
    engine: Literal["trt", "torch"] = "trt",
    precision: Literal["fp16", "fp32"] = "fp16",
) -> Pipeline:
    """The NVDEC + CUDA preprocessing + TensorRT FP16 (or PyTorch FP16) pipeline for a model manifest.

    Args:
        manifest: ``runtime.model_manifest.ModelManifest`` (its ONNX file is built into a cached engine).
        sampling: ``SamplingPolicy``.
        preprocess: ``PreprocessConfig`` (model input contract).
        decode_timeout: per-video limit for CPU fallbacks (PyAV).
        num_workers: concurrent NVDEC sessions (7 on H100-class GPUs).
        batch_size: engine batch (also the engine profile's max batch).
        overlap: False gives the serial variant (benchmark ``gpu-serial``).
        engine_cache_dir: TensorRT engine cache (default ``runtime.infer.trt.default_cache_dir()``).
        device: CUDA device ordinal.
        engine: ``trt`` (TensorRT FP16 engine) or ``torch`` (``TorchBackend``: PyTorch FP16 + CUDA
            graphs with the ONNX file's weights; reads the batch buffers in place).
        precision: ``fp16`` or ``fp32`` kernels for either engine.

    Returns:
        A ``Pipeline``; its engine is built or loaded here (minutes on a cold cache).
    """
    from runtime.decode.nvdec import NvdecDecoder
    from runtime.decode.pyav import PyAVDecoder
    from runtime.device.cuda import CudaContext

    if engine not in ("trt", "torch"):
        raise ValueError(f"engine must be one of ('trt', 'torch'), got {engine!r}")
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be one of ('fp16', 'fp32'), got {precision!r}")
    if engine == "torch":
        from runtime.infer.torch import TorchBackend, TorchEngine

        backend: Any = TorchBackend(
            manifest.onnx_path, device="cuda", precision=precision, max_batch=batch_size, cuda_device=device
        ).activate()
        batch_engine: Any = TorchEngine(backend, CudaContext.get(device))
    else:
        from runtime.infer.trt import TensorRTBackend, TensorRTEngine

        backend = TensorRTBackend(
            manifest.onnx_path,
            precision=precision,
            max_batch=batch_size,
            opt_batch=max(1, batch_size // 2),
            cache_dir=engine_cache_dir,
            device=device,
        ).activate()
        batch_engine = TensorRTEngine(backend)
    decoder = NvdecDecoder(device=device, cpu_decoder=PyAVDecoder(timeout_seconds=decode_timeout))
    ops = CudaOps(CudaContext.get(device))
    image_shape = (3, preprocess.height, preprocess.width)
    if tuple(backend.input_shape) != image_shape:
        raise ValueError(f"engine input {backend.input_shape} does not match the preprocessing output {image_shape}")
    return Pipeline(
        session_factory=lambda worker: decoder.session(sampling, preprocess, ops),
        engine=batch_engine,
        ops=ops,
        image_shape=image_shape,
        num_workers=num_workers,
        batch_size=batch_size,
        overlap=overlap,
    )
