"""PyTorch backend: the shipped ONNX model's weights in a PyTorch module; FP32 on the CPU, FP16 + CUDA graphs on CUDA.

``torch`` (and ``onnx``, to read the weights) are imported lazily: importing this module
works without them; constructing ``TorchBackend`` raises ``BackendError`` naming the
missing package. No second weights file exists: the module is rebuilt from the ONNX
graph at activation (Note [Reading the ONNX graph by structure] in
``runtime.infer.onnx_graph``, Note [Inference-form EfficientNet-Lite0] in
``runtime.infer.torch_model``).

Note [CUDA graphs per batch bucket]
-----------------------------------
On CUDA the backbone runs in FP16 and channels-last; normalisation, GeM and the L2 norm
run in float32 inside the same module. ``activate()`` captures one CUDA graph per batch
bucket (powers of two up to ``max_batch``, and ``max_batch``), before any pipeline thread
runs (a capture must not overlap other threads' CUDA work), with cuDNN autotuning on
for the warm-up runs only. A batch of ``count`` images is copied into the static input of
the smallest bucket >= count and the graph replayed; the rows past ``count`` hold stale
images whose embeddings are ignored (the network has no cross-image operations). All graphs
share one memory pool, so at most one may run at a time: every enqueue makes its stream
wait for the previous enqueue's "done" event, which also orders enqueues from different
streams. ``torch.compile`` is not used: it takes minutes, not seconds, for this network.

Note [Streams and events]
-------------------------
``TorchEngine`` matches ``TensorRTEngine``: it owns one CUDA stream (a pycuda stream
wrapped with ``torch.cuda.ExternalStream`` when a ``CudaContext`` is given, so pycuda events
of the decode workers can be waited on), makes it wait on the batch's events, reads the
batch buffer in place through ``__cuda_array_interface__`` (no host round trip), enqueues
the copy of the embeddings to one of ``num_output_slots`` pinned host buffers and records
a "done" event. ``TorchPending.wait()`` blocks on that event; a slot is reused only after
its ``wait()`` returned. Both torch and pycuda use the device's primary context (Note [One
CUDA context] in ``runtime.device.cuda``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runtime.infer.base import BackendError, ModelBackend, OutputSlots

logger = logging.getLogger(__name__)

TorchDevice = Literal["cpu", "cuda"]
TorchPrecision = Literal["auto", "fp16", "fp32"]


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendError(f"torch: the 'torch' package is not importable ({exc}); install vcd-runtime[torch]") from exc
    try:
        import onnx  # noqa: F401 - reads the weights at activation
    except ImportError as exc:
        raise BackendError(f"torch: the 'onnx' package is not importable ({exc}); install vcd-runtime[torch]") from exc
    return torch


def default_graph_batches(max_batch: int) -> tuple[int, ...]:
    """Batch buckets captured as CUDA graphs: powers of two below ``max_batch``, and ``max_batch``."""
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


class CudaArrayView:
    """A device buffer seen through ``__cuda_array_interface__`` (v3) for ``torch.as_tensor``.

    Args:
        pointer: device address (e.g. ``int(pycuda DeviceAllocation)``).
        shape: array shape.
        typestr: numpy type string (``|u1`` = uint8).
    Synchronisation is the caller's (no ``stream`` key; the engine waits on events).
    """

    def __init__(self, pointer: int, shape: tuple[int, ...], typestr: str = "|u1") -> None:
        self.pointer = int(pointer)
        self.shape = tuple(int(s) for s in shape)
        self.typestr = typestr

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.typestr, "data": (self.pointer, False), "version": 3, "strides": None}


@dataclass
class TorchPending:
    """An enqueued (CUDA) or finished (CPU) inference; ``wait()`` returns float32 (count, D) owned by the caller."""

    backend: TorchBackend | None
    slot: int
    count: int
    done: Any = None  # torch.cuda.Event, None when finished
    start: Any = None
    _result: np.ndarray | None = None
    busy_seconds: float = 0.0

    def wait(self) -> np.ndarray:
        if self._result is None:
            assert self.backend is not None and self.done is not None
            self.done.synchronize()
            self.busy_seconds = self.start.elapsed_time(self.done) / 1000.0
            self._result = self.backend._host_out[self.slot][: self.count].numpy().copy()
            self.backend._slots.release(self.slot)
        return self._result


class TorchBackend(ModelBackend):
    """Runs the descriptor model with PyTorch.

    Args:
        onnx_path: the ONNX model whose weights are loaded (uint8 NCHW input, embeddings output).
        device: ``cpu`` or ``cuda``.
        precision: ``auto`` (FP16 on CUDA, FP32 on the CPU), ``fp16`` (CUDA only) or ``fp32``.
        max_batch: largest batch per call on the device (larger ``infer`` inputs are split);
            default 256 on CUDA, 32 on the CPU.
        cuda_graphs: replay captured CUDA graphs (Note [CUDA graphs per batch bucket]).
        graph_batches: the buckets to capture (default ``default_graph_batches(max_batch)``).
        channels_last: backbone memory format; default True (both devices: faster here).
        pad_mode: the stride-2 convs' asymmetric padding (``runtime.infer.torch_model.FoldedConv``):
            ``auto`` = ``kernel`` on the CPU (no padded copies), ``pad`` on CUDA (plain 3x3/5x5 kernels).
        cudnn_benchmark: autotune cuDNN kernels during the warm-up/capture runs.
        intra_op_threads: CPU threads (0 = torch's default). torch has one CPU thread pool
            per process, so a value > 0 calls ``torch.set_num_threads`` for the process.
        cuda_device: CUDA device ordinal.
        num_output_slots: device inferences in flight (Note [Streams and events]).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        device: TorchDevice = "cpu",
        precision: TorchPrecision = "auto",
        max_batch: int | None = None,
        cuda_graphs: bool = True,
        graph_batches: tuple[int, ...] | None = None,
        channels_last: bool | None = None,
        pad_mode: Literal["auto", "pad", "kernel"] = "auto",
        cudnn_benchmark: bool = True,
        intra_op_threads: int = 0,
        cuda_device: int = 0,
        num_output_slots: int = 3,
    ) -> None:
        super().__init__()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be one of ('cpu', 'cuda'), got {device!r}")
        if precision not in ("auto", "fp16", "fp32"):
            raise ValueError(f"precision must be one of ('auto', 'fp16', 'fp32'), got {precision!r}")
        if precision == "fp16" and device == "cpu":
            raise ValueError("precision 'fp16' needs device 'cuda' (the CPU backend runs FP32)")
        max_batch = (256 if device == "cuda" else 32) if max_batch is None else max_batch
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if graph_batches is not None and (not graph_batches or max(graph_batches) != max_batch or min(graph_batches) < 1):
            raise ValueError(f"graph_batches must be sizes in [1, max_batch] including max_batch={max_batch}, got {graph_batches}")
        if pad_mode not in ("auto", "pad", "kernel"):
            raise ValueError(f"pad_mode must be one of ('auto', 'pad', 'kernel'), got {pad_mode!r}")
        if intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {intra_op_threads}")
        if num_output_slots < 1:
            raise ValueError(f"num_output_slots must be >= 1, got {num_output_slots}")
        self.onnx_path = Path(onnx_path)
        self.device = device
        self.precision = ("fp16" if device == "cuda" else "fp32") if precision == "auto" else precision
        self.max_batch = max_batch
        self.cuda_graphs = cuda_graphs and device == "cuda"
        self.graph_batches = tuple(sorted(set(graph_batches))) if graph_batches else default_graph_batches(max_batch)
        self.channels_last = True if channels_last is None else channels_last
        self.pad_mode = ("pad" if device == "cuda" else "kernel") if pad_mode == "auto" else pad_mode
        self.cudnn_benchmark = cudnn_benchmark
        self.intra_op_threads = intra_op_threads
        self.cuda_device = cuda_device
        self.num_output_slots = num_output_slots
        self.name = f"torch-{device}-{self.precision}"
        self._torch = _import_torch()
        if not self.onnx_path.is_file():
            raise BackendError(f"{self.name}: ONNX model not found: {self.onnx_path}")
        self._net: Any = None
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        self.activation_seconds: float | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def preferred_batch_size(self) -> int:
        return self.max_batch

    @property
    def torch_device(self) -> Any:
        """The ``torch.device`` the model runs on."""
        return self._torch.device(self.device, self.cuda_device) if self.device == "cuda" else self._torch.device("cpu")

    # -- lifecycle ----------------------------------------------------------------------

    def activate_impl(self) -> None:
        from runtime.infer.torch_model import load_embedding_net

        torch = self._torch
        start = time.perf_counter()
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise BackendError(f"{self.name}: torch {torch.__version__} sees no CUDA device (CPU-only build or no driver)")
            if not 0 <= self.cuda_device < torch.cuda.device_count():
                raise BackendError(f"{self.name}: no CUDA device {self.cuda_device} (found {torch.cuda.device_count()})")
        elif self.intra_op_threads > 0:
            torch.set_num_threads(self.intra_op_threads)
        net = load_embedding_net(self.onnx_path, self.pad_mode)
        self._shape = net.input_shape
        self._dim = net.output_dim
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self._net = net.to(self.torch_device).set_compute(dtype, self.channels_last)
        if self.device == "cuda":
            self._activate_cuda()
        self.activation_seconds = time.perf_counter() - start
        logger.info("%s: model ready from %s (%s, %.1f s)", self.name, self.onnx_path,
                    f"CUDA graphs for batches {list(self._graphs)}" if self._graphs else "eager", self.activation_seconds)

    def _activate_cuda(self) -> None:
        torch = self._torch
        device = self.torch_device
        shape = self.input_shape
        self._stream = torch.cuda.Stream(device)
        self._lock = threading.Lock()
        self._last_done: Any = None
        self._host_out = [torch.empty((self.max_batch, self.output_dim), dtype=torch.float32, pin_memory=True) for _ in range(self.num_output_slots)]
        self._slots = OutputSlots(self.num_output_slots)
        self._host_in = torch.empty((self.max_batch, *shape), dtype=torch.uint8, pin_memory=True)
        self._dev_in = torch.empty((self.max_batch, *shape), dtype=torch.uint8, device=device)
        self._graphs = {}
        if not self.cuda_graphs:
            return
        pool = None
        capture = torch.cuda.Stream(device)
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, benchmark=self.cudnn_benchmark):
            for batch in self.graph_batches:
                static_in = torch.zeros((batch, *shape), dtype=torch.uint8, device=device)
                capture.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(capture):
                    for _ in range(2):  # warm-up: cuDNN autotuning and lazy initialisation outside the capture
                        self._net(static_in)
                capture.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=capture, capture_error_mode="thread_local"):
                    static_out = self._net(static_in)
                pool = graph.pool()
                self._graphs[batch] = (graph, static_in, static_out)
        torch.cuda.synchronize(device)

    def deactivate_impl(self) -> None:
        if self.device == "cuda" and self._net is not None:
            self._stream.synchronize()
            self._graphs = {}
            self._host_out = []
            self._host_in = self._dev_in = None
        self._net = None

    # -- inference ----------------------------------------------------------------------

    def infer_device(self, images: Any, stream: Any = None) -> TorchPending:
        """Enqueue inference on uint8 images already on the device (CUDA backends only).

        Args:
            images: a CUDA uint8 tensor (count, C, H, W), 1 <= count <= max_batch, contiguous;
                read in place, so it must stay unchanged until the pending's ``wait()``.
            stream: a ``torch.cuda.Stream`` (or ``ExternalStream``) to enqueue on (default: the
                backend's); the caller has made it wait for the images' writes.

        Returns:
            A ``TorchPending``; its ``wait()`` gives float32 (count, D).
        """
        torch = self._torch
        if not self.is_active:
            raise BackendError(f"{self.name}: call activate() before infer_device()")
        if self.device != "cuda":
            raise BackendError(f"{self.name}: infer_device() needs a CUDA backend")
        if not isinstance(images, torch.Tensor) or not images.is_cuda or images.dtype != torch.uint8:
            raise ValueError(f"{self.name}: infer_device() takes a CUDA uint8 tensor, got {type(images).__name__}")
        count = int(images.shape[0])
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape or not 1 <= count <= self.max_batch:
            raise ValueError(f"{self.name}: expected images (1..{self.max_batch}, {', '.join(map(str, self.input_shape))}), got {tuple(images.shape)}")
        slot = self._slots.acquire()
        try:
            with self._lock:
                stream = self._stream if stream is None else stream
                with torch.cuda.stream(stream):
                    if self._last_done is not None:
                        stream.wait_event(self._last_done)  # Note [CUDA graphs per batch bucket]
                    start = torch.cuda.Event(enable_timing=True)
                    start.record(stream)
                    if self._graphs:
                        bucket = next(b for b in self.graph_batches if b >= count)
                        graph, static_in, static_out = self._graphs[bucket]
                        static_in[:count].copy_(images)
                        graph.replay()
                        out = static_out[:count]
                    else:
                        with torch.no_grad():
                            out = self._net(images.contiguous())
                    self._host_out[slot][:count].copy_(out, non_blocking=True)
                    done = torch.cuda.Event(enable_timing=True)
                    done.record(stream)
                    self._last_done = done
        except BaseException:
            self._slots.release(slot)
            raise
        return TorchPending(self, slot, count, done, start)

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        outputs = []
        if self.device == "cpu":
            with torch.inference_mode():
                for begin in range(0, images.shape[0], self.max_batch):
                    outputs.append(self._net(torch.from_numpy(images[begin : begin + self.max_batch])).numpy())
            return np.concatenate(outputs).astype(np.float32, copy=False)
        # not thread-safe: the staging buffers are reused after each chunk's wait()
        for begin in range(0, images.shape[0], self.max_batch):
            chunk = images[begin : begin + self.max_batch]
            n = chunk.shape[0]
            self._host_in[:n].numpy()[...] = chunk
            with torch.cuda.stream(self._stream):
                self._dev_in[:n].copy_(self._host_in[:n], non_blocking=True)
            outputs.append(self.infer_device(self._dev_in[:n], self._stream).wait())
        return np.concatenate(outputs)


class TorchEngine:
    """``BatchEngine`` of ``TorchBackend`` for ``runtime.pipeline.scheduler`` (Note [Streams and events]).

    Device batches (pycuda allocations or device pointers from ``CudaOps``, or CUDA tensors)
    go to ``infer_device`` without a host round trip; numpy batches (``HostOps``) go to
    ``infer`` (on the CPU, or uploaded for a CUDA backend) and finish inside ``submit``.

    Args:
        backend: a ``TorchBackend`` (activated here if it is not yet).
        context: the ``runtime.device.cuda.CudaContext`` of the pipeline (needed to wait on
            pycuda events); None for CPU backends or tensor/torch-event inputs.
    """

    def __init__(self, backend: TorchBackend, context: Any = None) -> None:
        self.backend = backend.activate()
        self.max_batch = backend.max_batch
        self.output_dim = backend.output_dim
        self.context = context
        self._pystream = None
        self.stream = None
        if backend.device == "cuda":
            torch = backend._torch
            if context is not None:
                import pycuda.driver as cuda

                with context.scope():
                    self._pystream = cuda.Stream()
                self.stream = torch.cuda.ExternalStream(int(self._pystream.handle), device=backend.torch_device)
            else:
                self.stream = torch.cuda.Stream(backend.torch_device)

    def _wait_for(self, events: list[Any]) -> None:
        torch = self.backend._torch
        for event in events:
            if isinstance(event, torch.cuda.Event):
                self.stream.wait_event(event)
            elif self._pystream is not None:
                self._pystream.wait_for_event(event)  # the CUDA context is current (pipeline thread scope)
            else:
                raise BackendError(f"{self.backend.name}: got a {type(event).__name__} event; pass the CudaContext to TorchEngine to wait on pycuda events")

    def submit(self, buffer: Any, count: int, wait_events: list[Any]) -> TorchPending:
        backend = self.backend
        if not 1 <= count <= self.max_batch:
            raise ValueError(f"{backend.name}: count must be in [1, {self.max_batch}], got {count}")
        if isinstance(buffer, np.ndarray):
            start = time.perf_counter()
            result = backend.infer(buffer[:count])
            return TorchPending(None, -1, count, _result=np.array(result, dtype=np.float32), busy_seconds=time.perf_counter() - start)
        if backend.device != "cuda":
            raise BackendError(f"{backend.name}: a CPU backend takes numpy batches, got {type(buffer).__name__}")
        torch = backend._torch
        self._wait_for(list(wait_events))
        if isinstance(buffer, torch.Tensor):
            images = buffer[:count]
        else:
            view = CudaArrayView(int(buffer), (count, *backend.input_shape))
            images = torch.as_tensor(view, device=backend.torch_device)
        return backend.infer_device(images, self.stream)


__all__ = ["CudaArrayView", "TorchBackend", "TorchEngine", "TorchPending", "default_graph_batches"]
