"""TensorRT backend: FP16 engine built from the ONNX model, cached on disk, run with pycuda buffers.

Uses only TensorRT's name-based tensor API (``num_io_tensors`` / ``get_tensor_name`` /
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``, TensorRT >= 8.5), so
the same code runs on 8.5 and 10.x. ``tensorrt`` and ``pycuda`` are imported lazily:
importing this module works without them; constructing the backend raises ``BackendError``
naming the missing package.

Note [Engine cache]
-------------------
Building the engine takes ~2 minutes, so engines are cached under ``cache_dir`` keyed by
sha256 of (ONNX bytes, TensorRT version, GPU name, compute capability, precision, batch
profile, input dtype, tactic sources). A JSON sidecar next to each ``.engine`` records
those fields; an engine whose sidecar does not match is rebuilt. A timing cache
(``timing.cache``, keyed by TensorRT version and GPU) makes rebuilds for other profiles
faster.

Note [TensorRT 8.5 tactic sources]
----------------------------------
TensorRT 8.5's builder may pick cuBLAS/cuDNN tactics; hosts without cuBLAS 11 / cuDNN 8
(the offline GPU bundle stubs them) crash when it tries. ``enable_cublas_cudnn_tactics``
defaults to False, which removes CUBLAS, CUBLAS_LT and CUDNN from the tactic sources; the
descriptor model (a plain CNN) loses nothing measurable.

Note [Buffer reuse]
-------------------
``infer`` copies its result out of the pinned output buffer, so returned arrays are owned
by the caller. ``infer_device`` results point at one of ``num_output_slots`` device/pinned
output pairs; a slot is reused only after its ``TrtPending.wait()`` returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runtime.infer.base import BackendError, ModelBackend, OutputSlots

logger = logging.getLogger(__name__)

Precision = Literal["fp16", "fp32"]
InputDtype = Literal["auto", "uint8", "float32"]


def default_cache_dir() -> Path:
    """``$VCD_TRT_CACHE`` or ``~/.cache/vcd-runtime/tensorrt``."""
    return Path(os.environ.get("VCD_TRT_CACHE", Path.home() / ".cache" / "vcd-runtime" / "tensorrt"))


def _import_gpu_modules() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"tensorrt: the 'tensorrt' package is not importable ({exc}); install vcd-runtime[gpu]") from exc
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendError(f"tensorrt: the 'pycuda' package is not importable ({exc}); install vcd-runtime[gpu]") from exc
    return trt, cuda


def engine_cache_key(onnx_bytes: bytes, fields: dict[str, Any]) -> str:
    """sha256 hex of the ONNX bytes and the build fields (Note [Engine cache])."""
    digest = hashlib.sha256(onnx_bytes)
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class TrtPending:
    """An enqueued inference; ``wait()`` returns float32 (count, D) owned by the caller."""

    backend: TensorRTBackend
    slot: int
    count: int
    done: Any  # pycuda Event
    start: Any  # pycuda Event (timing)
    _result: np.ndarray | None = None
    busy_seconds: float = 0.0

    def wait(self) -> np.ndarray:
        if self._result is None:
            self.done.synchronize()
            self.busy_seconds = self.start.time_till(self.done) / 1000.0
            self._result = np.array(self.backend._host_out[self.slot][: self.count], dtype=np.float32)
            self.backend._slots.release(self.slot)
        return self._result


class TensorRTBackend(ModelBackend):
    """Runs the descriptor model with a TensorRT engine.

    Args:
        onnx_path: the ONNX model (uint8 NCHW input with dynamic batch, float32 output).
        precision: ``fp16`` (FP16 kernels allowed) or ``fp32``.
        max_batch: largest batch of the optimisation profile.
        opt_batch: batch size TensorRT tunes for.
        workspace_bytes: builder workspace limit.
        cache_dir: where engines and the timing cache live (default ``default_cache_dir()``).
        enable_cublas_cudnn_tactics: allow cuBLAS/cuDNN tactics (Note [TensorRT 8.5 tactic sources]).
        timing_cache: read/write a timing cache in ``cache_dir``.
        input_dtype: engine input type; ``auto`` keeps the ONNX's uint8 input and retries with
            a float32 input (converted on the device) if the builder rejects uint8.
        device: CUDA device ordinal.
        num_output_slots: concurrent ``infer_device`` calls in flight (Note [Buffer reuse]).
    """

    name = "tensorrt"
    what = "engine"

    def __init__(
        self,
        onnx_path: str | Path,
        precision: Precision = "fp16",
        max_batch: int = 256,
        opt_batch: int = 128,
        workspace_bytes: int = 4 << 30,
        cache_dir: str | Path | None = None,
        enable_cublas_cudnn_tactics: bool = False,
        timing_cache: bool = True,
        input_dtype: InputDtype = "auto",
        device: int = 0,
        num_output_slots: int = 3,
    ) -> None:
        super().__init__()
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be one of ('fp16', 'fp32'), got {precision!r}")
        if input_dtype not in ("auto", "uint8", "float32"):
            raise ValueError(f"input_dtype must be one of ('auto', 'uint8', 'float32'), got {input_dtype!r}")
        if not 1 <= opt_batch <= max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch}, max_batch={max_batch}")
        if num_output_slots < 1:
            raise ValueError(f"num_output_slots must be >= 1, got {num_output_slots}")
        self.onnx_path = Path(onnx_path)
        self.precision = precision
        self.max_batch = max_batch
        self.opt_batch = opt_batch
        self.workspace_bytes = workspace_bytes
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.enable_cublas_cudnn_tactics = enable_cublas_cudnn_tactics
        self.use_timing_cache = timing_cache
        self.requested_input_dtype = input_dtype
        self.device = device
        self.num_output_slots = num_output_slots
        self._trt, self._cuda = _import_gpu_modules()
        if not self.onnx_path.is_file():
            raise BackendError(f"{self.name}: ONNX model not found: {self.onnx_path}")
        self.engine_path: Path | None = None
        self.build_seconds: float | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def preferred_batch_size(self) -> int:
        return self.max_batch

    # -- build / cache ------------------------------------------------------------------

    def _build_fields(self, context: Any, input_dtype: str) -> dict[str, Any]:
        return {
            "tensorrt": self._trt.__version__,
            "gpu": context.name,
            "compute_capability": list(context.compute_capability),
            "precision": self.precision,
            "profile": [1, self.opt_batch, self.max_batch],
            "input_dtype": input_dtype,
            "cublas_cudnn_tactics": self.enable_cublas_cudnn_tactics,
        }

    def _load_or_build(self, context: Any) -> bytes:
        onnx_bytes = self.onnx_path.read_bytes()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dtypes = ["uint8", "float32"] if self.requested_input_dtype == "auto" else [self.requested_input_dtype]
        # a cached engine of any acceptable input dtype will do
        for dtype in dtypes:
            fields = self._build_fields(context, dtype)
            path = self.cache_dir / f"{engine_cache_key(onnx_bytes, fields)}.engine"
            sidecar = path.with_suffix(".json")
            if path.is_file() and sidecar.is_file():
                try:
                    if json.loads(sidecar.read_text()).get("fields") == fields:
                        logger.info("%s: using cached engine %s", self.name, path)
                        self.engine_path = path
                        return path.read_bytes()
                except (OSError, json.JSONDecodeError) as exc:
                    logger.warning("%s: ignoring unreadable sidecar %s (%s)", self.name, sidecar, exc)
        errors = []
        for dtype in dtypes:
            fields = self._build_fields(context, dtype)
            try:
                serialized = self._build(onnx_bytes, dtype, context)
            except BackendError as exc:
                errors.append(f"{dtype} input: {exc}")
                logger.warning("%s: build with %s input failed: %s", self.name, dtype, exc)
                continue
            path = self.cache_dir / f"{engine_cache_key(onnx_bytes, fields)}.engine"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(serialized)
            tmp.replace(path)
            path.with_suffix(".json").write_text(
                json.dumps({"fields": fields, "onnx": str(self.onnx_path), "build_seconds": self.build_seconds}, indent=2)
            )
            self.engine_path = path
            return serialized
        raise BackendError(f"{self.name}: could not build an engine from {self.onnx_path}: {'; '.join(errors)}")

    def _build(self, onnx_bytes: bytes, input_dtype: str, context: Any) -> bytes:
        trt = self._trt
        trt_logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(trt_logger)
        major = int(trt.__version__.split(".")[0])
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse(onnx_bytes):
            problems = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BackendError(f"ONNX parser failed: {problems}")
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise BackendError(f"expected one input and one output, got {network.num_inputs} and {network.num_outputs}")
        inp = network.get_input(0)
        if input_dtype == "float32":
            inp.dtype = trt.float32
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.precision == "fp16":
            if not builder.platform_has_fast_fp16:
                logger.warning("%s: this GPU has no fast FP16; building anyway", self.name)
            config.set_flag(trt.BuilderFlag.FP16)
        if not self.enable_cublas_cudnn_tactics:
            sources = int(config.get_tactic_sources())
            for name in ("CUBLAS", "CUBLAS_LT", "CUDNN"):
                source = getattr(trt.TacticSource, name, None)
                if source is not None:
                    sources &= ~(1 << int(source))
            config.set_tactic_sources(sources)
        timing_path = self._timing_cache_path(context)
        if timing_path is not None:
            blob = timing_path.read_bytes() if timing_path.is_file() else b""
            try:
                cache = config.create_timing_cache(blob)
                accepted = cache is not None and bool(config.set_timing_cache(cache, ignore_mismatch=False))
            except Exception as exc:  # noqa: BLE001 - TensorRT raises RuntimeError/TypeError on corrupt blobs
                logger.debug("%s: timing cache %s unreadable: %s", self.name, timing_path, exc)
                accepted = False
            if not accepted:
                # a cache of another GPU or TensorRT build: start from an empty one (it is rewritten below)
                logger.warning("%s: timing cache %s does not match this GPU/TensorRT; using a new one", self.name, timing_path)
                if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
                    raise BackendError("set_timing_cache rejected an empty timing cache")
        profile = builder.create_optimization_profile()
        _, c, h, w = tuple(inp.shape)
        profile.set_shape(inp.name, (1, c, h, w), (self.opt_batch, c, h, w), (self.max_batch, c, h, w))
        config.add_optimization_profile(profile)
        logger.info("%s: building %s engine for %s (batch 1..%d, this takes minutes)", self.name, self.precision, self.onnx_path, self.max_batch)
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        self.build_seconds = time.perf_counter() - start
        if serialized is None:
            raise BackendError("build_serialized_network returned None (see TensorRT's log above)")
        if timing_path is not None:
            timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        logger.info("%s: engine built in %.1f s", self.name, self.build_seconds)
        return bytes(serialized)

    def _timing_cache_path(self, context: Any) -> Path | None:
        """One timing cache per TensorRT version and GPU model (timings of another GPU are wrong here)."""
        if not self.use_timing_cache:
            return None
        major, minor = context.compute_capability
        gpu = "".join(c if c.isalnum() else "-" for c in str(context.name)).strip("-")
        return self.cache_dir / f"timing-{self._trt.__version__}-{gpu}-sm{major}{minor}.cache"

    # -- lifecycle ----------------------------------------------------------------------

    def activate_impl(self) -> None:
        from runtime.device.cuda import CudaContext

        trt, cuda = self._trt, self._cuda
        self.context = CudaContext.get(self.device)
        with self.context.scope():
            serialized = self._load_or_build(self.context)
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(serialized)
            if self._engine is None:
                raise BackendError(f"{self.name}: could not deserialize {self.engine_path}; delete it to rebuild")
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise BackendError(f"{self.name}: expected one input and one output tensor, got {inputs} / {outputs}")
            self._input_name, self._output_name = inputs[0], outputs[0]
            in_dtype = self._engine.get_tensor_dtype(self._input_name)
            self._float_input = in_dtype == trt.float32
            if not self._float_input and in_dtype != getattr(trt, "uint8", None):
                raise BackendError(f"{self.name}: unsupported engine input dtype {in_dtype}")
            shape = tuple(self._engine.get_tensor_shape(self._input_name))
            self._shape = tuple(int(d) for d in shape[1:])  # type: ignore[assignment]
            self._dim = int(self._engine.get_tensor_shape(self._output_name)[-1])
            self._exec = self._engine.create_execution_context()
            self.stream = cuda.Stream()
            image_elems = int(np.prod(self._shape))
            self._image_bytes = image_elems
            self._dev_in = cuda.mem_alloc(self.max_batch * image_elems)
            self._host_in = cuda.pagelocked_empty((self.max_batch, *self._shape), dtype=np.uint8)
            self._dev_float = cuda.mem_alloc(self.max_batch * image_elems * 4) if self._float_input else None
            self._dev_out = [cuda.mem_alloc(self.max_batch * self._dim * 4) for _ in range(self.num_output_slots)]
            self._host_out = [cuda.pagelocked_empty((self.max_batch, self._dim), dtype=np.float32) for _ in range(self.num_output_slots)]
            self._slots = OutputSlots(self.num_output_slots)
            self._preprocessor = None
            if self._float_input:
                from runtime.preprocess.cuda import CudaPreprocessor

                self._preprocessor = CudaPreprocessor(self.context)
        logger.info("%s: engine ready (input %s %s, output dim %d)", self.name, self._input_name, "float32" if self._float_input else "uint8", self._dim)

    def deactivate_impl(self) -> None:
        with self.context.scope():
            self.stream.synchronize()
            for name in ("_exec", "_engine", "_runtime", "_dev_in", "_dev_float", "_dev_out", "_host_in", "_host_out"):
                setattr(self, name, None)

    # -- inference ----------------------------------------------------------------------

    def infer_device(self, device_ptr: int, batch: int, stream: Any = None, wait_events: list[Any] = ()) -> TrtPending:  # type: ignore[assignment]
        """Enqueue inference on ``batch`` uint8 images already on the device.

        Args:
            device_ptr: device address of (batch, C, H, W) uint8 images.
            batch: 1..max_batch.
            stream: pycuda Stream to run on (default: the backend's own stream). The context
                must be current on the calling thread (``self.context.scope()``).
            wait_events: events the stream waits for first (e.g. the decoders' writes).

        Returns:
            A ``TrtPending``; its ``wait()`` gives float32 (batch, D).
        """
        if not self.is_active:
            raise BackendError(f"{self.name}: call activate() before infer_device()")
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"{self.name}: batch must be in [1, {self.max_batch}], got {batch}")
        cuda = self._cuda
        stream = self.stream if stream is None else stream
        for event in wait_events:
            stream.wait_for_event(event)
        slot = self._slots.acquire()
        start = cuda.Event()
        start.record(stream)
        input_ptr = int(device_ptr)
        if self._float_input:
            assert self._preprocessor is not None and self._dev_float is not None
            self._preprocessor.u8_to_f32(input_ptr, int(self._dev_float), batch * self._image_bytes, stream)
            input_ptr = int(self._dev_float)
        self._exec.set_input_shape(self._input_name, (batch, *self.input_shape))
        self._exec.set_tensor_address(self._input_name, input_ptr)
        self._exec.set_tensor_address(self._output_name, int(self._dev_out[slot]))
        if not self._exec.execute_async_v3(stream.handle):
            self._slots.release(slot)
            raise BackendError(f"{self.name}: execute_async_v3 failed for batch {batch}")
        cuda.memcpy_dtoh_async(self._host_out[slot][:batch], self._dev_out[slot], stream)
        done = cuda.Event()
        done.record(stream)
        return TrtPending(self, slot, batch, done, start)

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        outputs = []
        with self.context.scope():
            for begin in range(0, images.shape[0], self.max_batch):
                chunk = images[begin : begin + self.max_batch]
                n = chunk.shape[0]
                self._host_in[:n] = chunk
                self._cuda.memcpy_htod_async(self._dev_in, self._host_in[:n], self.stream)
                outputs.append(self.infer_device(int(self._dev_in), n, self.stream).wait())
        return np.concatenate(outputs)


class TensorRTEngine:
    """``BatchEngine`` adapter of ``TensorRTBackend`` for ``runtime.pipeline.scheduler`` (device batches).

    Args:
        backend: an activated backend; the pipeline's threads enter its CUDA context.
    """

    def __init__(self, backend: TensorRTBackend) -> None:
        self.backend = backend
        self.max_batch = backend.max_batch
        self.output_dim = backend.output_dim

    def submit(self, buffer: Any, count: int, wait_events: list[Any]) -> TrtPending:
        return self.backend.infer_device(int(buffer), count, self.backend.stream, wait_events)


__all__ = ["TensorRTBackend", "TensorRTEngine", "TrtPending", "default_cache_dir", "engine_cache_key"]
