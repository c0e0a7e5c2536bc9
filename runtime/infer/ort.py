"""ONNX Runtime backend: the portable reference (CPU by default, CUDA/TensorRT providers when installed)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.infer.base import BackendError, ModelBackend

logger = logging.getLogger(__name__)


class OnnxRuntimeBackend(ModelBackend):
    """Runs the ONNX descriptor model with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file (uint8 NCHW input, float32 embeddings output).
        providers: execution providers in priority order; all must be available.
        intra_op_threads: threads per operator (0 = ONNX Runtime's default).
        batch_size: images per ``session.run`` call; larger batches are split.
        allow_spinning: let idle ONNX Runtime threads spin; off by default, because the
            decoders share the cores and spinning threads would take their time.
    """

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        batch_size: int = 32,
        allow_spinning: bool = False,
    ) -> None:
        super().__init__()
        self.allow_spinning = allow_spinning
        self.model_path = Path(model_path)
        self.providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self.batch_size = batch_size
        self.name = "ort-" + ("cuda" if "CUDAExecutionProvider" in self.providers else "cpu")
        self._session = None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    @property
    def preferred_batch_size(self) -> int:
        return self.batch_size

    def activate_impl(self) -> None:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise BackendError(f"{self.name}: model file not found: {self.model_path}")
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise BackendError(f"{self.name}: execution providers {missing} are not available; available: {available}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=list(self.providers))
        except Exception as exc:  # ORT raises its own exception types per failure
            raise BackendError(f"{self.name}: cannot load {self.model_path}: {exc}") from exc
        (inp,) = self._session.get_inputs()
        (out,) = self._session.get_outputs()
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4 or not all(isinstance(d, int) for d in inp.shape[1:]):
            raise BackendError(f"{self.name}: expected a uint8 (N, C, H, W) input with static C/H/W, got {inp.type} {inp.shape}")
        self._input_name, self._output_name = inp.name, out.name
        self._shape = tuple(int(d) for d in inp.shape[1:])  # type: ignore[assignment]
        self._dim = int(out.shape[-1])
        logger.debug("%s: loaded %s with %s", self.name, self.model_path, self._session.get_providers())

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        assert self._session is not None
        chunks = [
            self._session.run([self._output_name], {self._input_name: images[i : i + self.batch_size]})[0]
            for i in range(0, images.shape[0], self.batch_size)
        ]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def deactivate_impl(self) -> None:
        self._session = None
