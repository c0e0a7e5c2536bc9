"""Static int8 quantisation of the shipped model (ONNX Runtime, QDQ), calibrated on TRAINING frames only.

    python -m onnx_export.quantize --train-dir /work/data/mini-vsc-small/train --model-dir model_assets
    python -m onnx_export.quantize --train-dir ... --model-dir DIR_160 --out-dir DIR_160_INT8   # any input size

Decodes ``train-dir/reference/*.mp4`` (the training references of a mini-VSC build, cut from the
fixed training region of the source: Note [fixed training footage] in benchmarks/build_dataset.py)
at ``--sample-fps`` with the runtime's own decoder and preprocessing, calibrates activation ranges on
those frames, and writes ``<name>_int8.onnx`` next to the fp32 model with a manifest sidecar
``manifest_int8.json`` that follows the same contract as ``manifest.json`` (same input, output,
projection and noise set: the int8 model approximates the fp32 one, so the fp32 postprocessing is
reused unchanged and "same postprocessing" comparisons hold). Never point ``--train-dir`` at query or
test-reference videos: the challenge forbids calibrating or fitting on them. The calibration frames
follow the fp32 manifest's input contract, so a model exported with ``onnx_export.export
--input-size N`` is calibrated on N x N frames. ``--out-dir`` writes the int8 model and its manifest
into another directory (with copies of the projection and noise set the manifest names), leaving
the fp32 directory untouched.

Note [int8 quantisation choices]
--------------------------------
* QDQ format, weights int8 per output channel (symmetric), activations uint8 (asymmetric): the
  layout ONNX Runtime's CPU EP fuses into QLinearConv / QLinearAdd kernels.
* Only the backbone is quantised (Conv, Clip = ReLU6, Add). The uint8->float normalisation, GeM
  pooling (x^3 mean, cube root) and the L2 normalisation stay fp32: a cube on int8 activations
  loses most of its range and these ops cost nothing next to the convolutions.
* ``reduce_range`` (7-bit weights) is the ONNX Runtime advice for u8s8 on AVX2 without VNNI, where
  ``vpmaddubsw`` can saturate its int16 sums; it is a flag here so both can be measured.
* Calibration: percentile (99.999) of the activations by default, which ignores a few outliers
  that MinMax would stretch the ranges for.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.model_manifest import MANIFEST_FILENAME, ModelManifest, sha256_of_file

logger = logging.getLogger("onnx_export.quantize")

INT8_MANIFEST_FILENAME = "manifest_int8.json"
# Tail ops left in fp32 (Note [int8 quantisation choices]): names from onnx_export.export's graph.
_FP32_PREFIXES = ("/normalize/", "/pool/", "/Pow", "/ReduceSum", "/Sqrt", "/Clip", "/Div")


def calibration_frames(train_dir: Path, manifest: ModelManifest, sample_fps: float, limit: int | None = None) -> np.ndarray:
    """Model-input frames (uint8 NCHW) of the training references, decoded like the runtime does.

    Args:
        train_dir: a split in the challenge layout; only ``reference/*.mp4`` is read.
        manifest: the fp32 model's manifest (input contract).
        sample_fps: frames per second sampled from each video.
        limit: keep at most this many frames (evenly spread), None = all.

    Returns:
        uint8 (N, 3, H, W) frames.
    """
    from runtime.decode.pyav import PyAVDecoder
    from runtime.pipeline.extractor import preprocess_config
    from runtime.sampling import SamplingPolicy

    videos = sorted((train_dir / "reference").glob("*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no training references in {train_dir / 'reference'} (expected *.mp4)")
    decoder, policy, preprocess = PyAVDecoder(), SamplingPolicy(fps=sample_fps), preprocess_config(manifest)
    frames = np.concatenate([decoder.decode(path, policy, preprocess).images for path in videos])
    if limit is not None and frames.shape[0] > limit:
        frames = frames[np.linspace(0, frames.shape[0] - 1, limit).round().astype(np.int64)]
    logger.info("calibration: %d frames from %d training references", frames.shape[0], len(videos))
    return np.ascontiguousarray(frames)


class _FrameReader:
    """``CalibrationDataReader`` over in-memory frames, ``batch`` images per call."""

    def __init__(self, input_name: str, frames: np.ndarray, batch: int = 8) -> None:
        # Equal-sized batches only: the histogram calibrators stack per-batch outputs.
        frames = frames[: max(batch, frames.shape[0] // batch * batch)]
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: frames[i : i + batch]} for i in range(0, frames.shape[0], batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize(
    manifest: ModelManifest,
    frames: np.ndarray,
    out_path: Path,
    reduce_range: bool = False,
    calibrate: str = "percentile",
) -> Path:
    """Write a QDQ int8 copy of ``manifest``'s model calibrated on ``frames``.

    Args:
        manifest: the fp32 model.
        frames: uint8 (N, 3, H, W) calibration frames (training footage only).
        out_path: the ``.onnx`` file to write.
        reduce_range: 7-bit weights (see Note [int8 quantisation choices]).
        calibrate: ``percentile``, ``minmax`` or ``entropy``.

    Returns:
        ``out_path``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
    if calibrate not in methods:
        raise ValueError(f"calibrate must be one of {sorted(methods)}, got {calibrate!r}")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(manifest.onnx_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        excluded = [n.name for n in graph.node if n.name.startswith(_FP32_PREFIXES)]
        extra = {"WeightSymmetric": True, "ActivationSymmetric": False, "CalibTensorRangeSymmetric": False}
        if calibrate == "percentile":
            extra["CalibPercentile"] = 99.999
        quantize_static(
            str(prepared),
            str(out_path),
            _FrameReader(manifest.input.name, frames),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Clip", "Add"],
            nodes_to_exclude=excluded,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[calibrate],
            extra_options=extra,
        )
    return out_path


def write_int8_manifest(model_dir: Path, int8_file: str, calibration: dict, out_dir: Path | None = None) -> Path:
    """``manifest_int8.json``: the fp32 manifest with the int8 file, its sha256 and how it was made.

    Args:
        model_dir: the fp32 model's directory (its ``manifest.json`` is the template).
        int8_file: name of the int8 ``.onnx`` file, inside ``out_dir``.
        calibration: how the int8 model was made (recorded as ``quantization``).
        out_dir: where the int8 file is and the manifest goes (default ``model_dir``); the projection
            and noise set files the manifest names are copied there when it is another directory.

    Returns:
        The manifest path.
    """
    import shutil

    out_dir = model_dir if out_dir is None else out_dir
    data = json.loads((model_dir / MANIFEST_FILENAME).read_text(encoding="utf-8"))
    if out_dir.resolve() != model_dir.resolve():
        for key in ("projection", "noise_set"):
            if data.get(key):
                shutil.copy2(model_dir / data[key], out_dir / data[key])
    data["name"] = f"{data['name']}_int8"
    data["onnx_file"] = int8_file
    data["onnx_sha256"] = sha256_of_file(out_dir / int8_file)
    data["quantization"] = calibration
    path = out_dir / INT8_MANIFEST_FILENAME
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    ModelManifest.load(path).verify()  # the sidecar must satisfy the same contract as manifest.json
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-dir", type=Path, required=True, help="training split (reference/*.mp4); never test videos")
    parser.add_argument("--model-dir", type=Path, default=Path("model_assets"))
    parser.add_argument("--out-dir", type=Path, default=None, help="where the int8 model and its manifest go (default: --model-dir)")
    parser.add_argument("--sample-fps", type=float, default=2.0, help="calibration frames per second of training video")
    parser.add_argument("--max-frames", type=int, default=256, help="calibration frames at most (evenly spread)")
    parser.add_argument("--calibrate", choices=["percentile", "minmax", "entropy"], default="percentile")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights (u8s8 saturation on AVX2 without VNNI)")
    parser.add_argument("--out-name", default=None, help="output file name (default: <fp32 name>_int8.onnx)")
    parser.add_argument("--no-manifest", action="store_true", help="do not write manifest_int8.json (for trial variants)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if "query" in args.train_dir.parts or args.train_dir.name in ("query", "reference"):
        parser.error(f"--train-dir must be a training split (DATASET/train), got {args.train_dir}")
    manifest = ModelManifest.load(args.model_dir / MANIFEST_FILENAME)
    manifest.verify()
    frames = calibration_frames(args.train_dir, manifest, args.sample_fps, args.max_frames)
    name = args.out_name or f"{Path(manifest.onnx_file).stem}_int8.onnx"
    out_dir = args.out_dir or args.model_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    quantize(manifest, frames, out_dir / name, reduce_range=args.reduce_range, calibrate=args.calibrate)
    logger.info("wrote %s", out_dir / name)
    if not args.no_manifest:
        calibration = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8 per-channel symmetric",
                       "activations": "uint8 asymmetric", "reduce_range": args.reduce_range, "calibrate": args.calibrate,
                       "calibration_frames": int(frames.shape[0]), "calibration_source": f"{args.train_dir.name}/reference at {args.sample_fps} fps",
                       "calibration_size": [manifest.input.height, manifest.input.width],
                       "fp32_onnx_sha256": manifest.onnx_sha256, "fp32_ops": list(_FP32_PREFIXES)}
        logger.info("wrote %s", write_int8_manifest(args.model_dir, name, calibration, out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
