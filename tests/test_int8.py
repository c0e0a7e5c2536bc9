"""The int8 model sidecar (onnx_export/quantize.py): same manifest contract as fp32, and its
embeddings against the fp32 model's on real decoded frames. Skips when the asset is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.model_manifest import ModelManifest

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "model_assets"
INT8_MANIFEST = ASSETS / "manifest_int8.json"
DEMO = REPO / "runtime" / "demo_data"

pytestmark = pytest.mark.skipif(not INT8_MANIFEST.is_file(), reason="no model_assets/manifest_int8.json (python -m onnx_export.quantize)")


def test_int8_sidecar_follows_the_manifest_contract() -> None:
    fp32, int8 = ModelManifest.load(ASSETS / "manifest.json"), ModelManifest.load(INT8_MANIFEST)
    int8.verify()  # sha256 of the int8 file and the shared postprocessing assets
    assert int8.onnx_path != fp32.onnx_path and int8.onnx_sha256 != fp32.onnx_sha256
    assert int8.input == fp32.input and int8.output == fp32.output and int8.normalization == fp32.normalization
    assert int8.projection_path == fp32.projection_path and int8.noise_set_path == fp32.noise_set_path


def test_int8_embeddings_stay_close_to_fp32_on_real_frames() -> None:
    import onnx

    from runtime.decode.pyav import PyAVDecoder
    from runtime.infer.ort import OnnxRuntimeBackend
    from runtime.pipeline.extractor import preprocess_config
    from runtime.sampling import SamplingPolicy

    fp32, int8 = ModelManifest.load(ASSETS / "manifest.json"), ModelManifest.load(INT8_MANIFEST)
    ops = {node.op_type for node in onnx.load(str(int8.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    videos = sorted((DEMO / "query").glob("*.mp4"))[:3] + sorted((DEMO / "reference").glob("*.mp4"))[:1]
    frames = np.concatenate([PyAVDecoder().decode(v, SamplingPolicy(fps=0.5), preprocess_config(fp32)).images for v in videos])
    a = OnnxRuntimeBackend(fp32.onnx_path).activate().infer(frames).astype(np.float64)
    b = OnnxRuntimeBackend(int8.onnx_path).activate().infer(frames).astype(np.float64)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)  # the fp32 tail still L2-normalises
    cosine = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # Measured on mini-VSC query frames: mean 0.90, min 0.82 (benchmarks/RESULTS.md): far from
    # fp32-equivalent, which is why int8 is not the CPU default; this pins that quality from below.
    assert cosine.mean() >= 0.85 and cosine.min() >= 0.7, f"cosine to fp32: mean {cosine.mean():.4f}, min {cosine.min():.4f}"
    # Still a descriptor of the same image: each int8 embedding is nearest to its own fp32 one.
    similarity = b @ a.T
    assert np.mean(np.argmax(similarity, axis=1) == np.arange(len(frames))) >= 0.8
