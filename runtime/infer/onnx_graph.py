"""Reads the descriptor model's ONNX graph into plain weights and structure (numpy; no torch).

``runtime.infer.torch_model`` rebuilds the network from what this module returns, so the
PyTorch backend runs the shipped ONNX file's weights and needs no second weights file.

Note [Reading the ONNX graph by structure]
------------------------------------------
Initializer names of an exported graph are not stable (``onnx::Conv_927`` after the
exporter folded each BatchNorm into its conv), so nothing here is looked up by name. The
reader walks ``graph.node`` in its (topological) order and follows the data flow from the
graph input to the graph output, expecting exactly this shape of graph:

* ``Cast(images) -> Sub(mean) -> Div(std)`` (normalisation inside the model);
* a chain of ``Conv`` nodes (weight + bias, BatchNorm folded), each optionally followed by
  ``Clip(0, 6)`` (ReLU6), with ``Add`` nodes joining the chain's current tensor and an
  earlier tensor of the chain (residual connections);
* ``Clip(eps) -> Pow(p) -> ReduceMean(H, W) -> Pow(1/p)`` (GeM pooling);
* ``Pow(2) -> ReduceSum(C) -> Sqrt -> Clip(eps) -> Div`` (L2 normalisation) into the output.

Every node must be consumed in that order and every tensor must come from where the
pattern says; anything else raises ``ModelGraphError`` naming the node and what was
expected. The module that loads the result then checks each conv's shape, stride,
groups, padding and activation, and the residual spans, against its own architecture.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.infer.base import BackendError


class ModelGraphError(BackendError):
    """The ONNX graph does not have the structure (or weights) the PyTorch module expects."""


@dataclass(frozen=True)
class ConvLayer:
    """One ``Conv`` of the chain (BatchNorm already folded into weight and bias).

    Attributes:
        node: the ONNX node's name (for messages).
        weight: float32 (out, in / groups, kh, kw).
        bias: float32 (out,) or None.
        stride: (sh, sw).
        groups: the ``group`` attribute.
        pads: (top, left, bottom, right), ONNX's ``[h_begin, w_begin, h_end, w_end]``.
        dilations: (dh, dw).
        relu6: followed by ``Clip(0, 6)``.
    """

    node: str
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    groups: int
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    relu6: bool = False


@dataclass
class GraphWeights:
    """What the PyTorch module needs from the ONNX file.

    Attributes:
        input_shape: (C, H, W) of the uint8 input (the batch is dynamic).
        mean, std: per-channel normalisation, float32 (C,).
        convs: the chain's convs in execution order.
        residuals: (first, last) conv indices spanned by each residual ``Add``: the add
            joins the output of conv ``last`` (after its activation) with the input of
            conv ``first``.
        gem_p, gem_eps: GeM exponent and clamp.
        l2_eps: clamp of the L2 norm.
        output_dim: embedding size.
    """

    input_shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray
    convs: list[ConvLayer] = field(default_factory=list)
    residuals: list[tuple[int, int]] = field(default_factory=list)
    gem_p: float = 0.0
    gem_eps: float = 0.0
    l2_eps: float = 0.0
    output_dim: int = 0


class _Walker:
    """A cursor over ``graph.node`` that checks each node's op type and data flow."""

    def __init__(self, model: Any, source: str) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self.source = source
        graph = model.graph
        self.values: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":  # folded away by the exporter's cleanup, but accepted
                attrs = {a.name: a for a in node.attribute}
                if "value" not in attrs:
                    raise self.error(node, "only Constant nodes with a tensor 'value' are supported")
                self.values[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(attrs["value"]))
            else:
                self.nodes.append(node)
        self.position = 0

    def error(self, node: Any, message: str) -> ModelGraphError:
        where = f"node {node.name or node.op_type!r} ({node.op_type})" if node is not None else "end of graph"
        return ModelGraphError(f"{self.source}: {where}: {message}")

    def peek(self) -> Any | None:
        return self.nodes[self.position] if self.position < len(self.nodes) else None

    def take(self, op_type: str, data_input: str | None, what: str) -> Any:
        node = self.peek()
        if node is None:
            raise ModelGraphError(f"{self.source}: the graph ends where {op_type} ({what}) was expected")
        if node.op_type != op_type:
            raise self.error(node, f"expected {op_type} ({what})")
        if data_input is not None and (not node.input or node.input[0] != data_input):
            got = node.input[0] if node.input else None
            raise self.error(node, f"{what} reads {got!r}, expected {data_input!r}")
        self.position += 1
        return node

    def attrs(self, node: Any) -> dict[str, Any]:
        return {a.name: self._helper.get_attribute_value(a) for a in node.attribute}

    def constant(self, node: Any, index: int, what: str) -> np.ndarray:
        if len(node.input) <= index or not node.input[index]:
            raise self.error(node, f"missing input {index} ({what})")
        name = node.input[index]
        if name not in self.values:
            raise self.error(node, f"{what} ({name!r}) is not an initializer or constant")
        return self.values[name]

    def scalar(self, node: Any, index: int, what: str) -> float:
        value = self.constant(node, index, what)
        if value.size != 1:
            raise self.error(node, f"{what} must be a scalar, got shape {value.shape}")
        return float(value.reshape(-1)[0])

    def clip_bounds(self, node: Any) -> tuple[float | None, float | None]:
        attrs = self.attrs(node)
        if "min" in attrs or "max" in attrs:  # opset < 11
            return attrs.get("min"), attrs.get("max")
        low = self.scalar(node, 1, "Clip min") if len(node.input) > 1 and node.input[1] else None
        high = self.scalar(node, 2, "Clip max") if len(node.input) > 2 and node.input[2] else None
        return low, high


def _check_close(walker: _Walker, node: Any, what: str, got: float, expected: float) -> None:
    if not np.isclose(got, expected, rtol=1e-6, atol=1e-9):
        raise walker.error(node, f"{what} is {got}, expected {expected}")


def _read_conv(walker: _Walker, node: Any) -> ConvLayer:
    attrs = walker.attrs(node)
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise walker.error(node, f"auto_pad={attrs['auto_pad']!r} is not supported (explicit pads only)")
    weight = walker.constant(node, 1, "conv weight")
    if weight.ndim != 4 or weight.dtype != np.float32:
        raise walker.error(node, f"conv weight must be float32 4-D, got {weight.dtype} {weight.shape}")
    bias = walker.constant(node, 2, "conv bias") if len(node.input) > 2 and node.input[2] else None
    if bias is not None and (bias.dtype != np.float32 or bias.shape != (weight.shape[0],)):
        raise walker.error(node, f"conv bias must be float32 ({weight.shape[0]},), got {bias.dtype} {bias.shape}")
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", weight.shape[2:]))
    if kernel != tuple(weight.shape[2:]):
        raise walker.error(node, f"kernel_shape {kernel} does not match the weight's {tuple(weight.shape[2:])}")
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
    if len(pads) != 4 or len(strides) != 2 or len(dilations) != 2:
        raise walker.error(node, f"only 2-D convs are supported (pads {pads}, strides {strides})")
    return ConvLayer(
        node=node.name or f"Conv#{walker.position}",
        weight=weight,
        bias=bias,
        stride=strides,  # type: ignore[arg-type]
        groups=int(attrs.get("group", 1)),
        pads=pads,  # type: ignore[arg-type]
        dilations=dilations,  # type: ignore[arg-type]
    )


def read_graph_weights(model_or_path: str | Path | Any) -> GraphWeights:
    """Reads the normalisation, conv chain, residuals, GeM and L2 parameters of the model.

    See Note [Reading the ONNX graph by structure].

    Args:
        model_or_path: an ``.onnx`` file or an ``onnx.ModelProto``.

    Returns:
        ``GraphWeights`` with numpy arrays (copies, independent of the proto).

    Raises:
        ModelGraphError: the file is missing or unreadable, or the graph has another structure.
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise ModelGraphError(f"ONNX model not found: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and others for a bad file
            raise ModelGraphError(f"{path}: not a readable ONNX model: {exc}") from exc
        source = str(path)
    else:
        model, source = model_or_path, "ONNX model"
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]  # old exporters list initializers as inputs
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelGraphError(f"{source}: expected one input and one output, got {[i.name for i in inputs]} and {[o.name for o in graph.output]}")
    inp = inputs[0]
    tensor = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.elem_type != onnx.TensorProto.UINT8 or len(dims) != 4 or any(d is None or d < 1 for d in dims[1:]):
        raise ModelGraphError(f"{source}: expected a uint8 (N, C, H, W) input with static C/H/W, got elem_type {tensor.elem_type} dims {dims}")
    input_shape = (int(dims[1]), int(dims[2]), int(dims[3]))  # type: ignore[arg-type]
    output_name = graph.output[0].name

    w = _Walker(model, source)
    cast = w.take("Cast", inp.name, "uint8 -> float")
    if int(w.attrs(cast).get("to", -1)) != onnx.TensorProto.FLOAT:
        raise w.error(cast, f"casts to elem_type {w.attrs(cast).get('to')}, expected FLOAT")
    sub = w.take("Sub", cast.output[0], "mean subtraction")
    div = w.take("Div", sub.output[0], "std division")
    channels = input_shape[0]
    mean = np.asarray(w.constant(sub, 1, "mean"), dtype=np.float32).reshape(-1)
    std = np.asarray(w.constant(div, 1, "std"), dtype=np.float32).reshape(-1)
    if mean.size != channels or std.size != channels:
        raise w.error(sub, f"mean/std must have {channels} values, got {mean.size} and {std.size}")
    if np.any(std == 0):
        raise w.error(div, f"std has a zero: {std.tolist()}")

    weights = GraphWeights(input_shape=input_shape, mean=mean.copy(), std=std.copy())
    current = div.output[0]
    # tensor -> index of the first conv that reads it (the chain position of that tensor)
    chain_position: dict[str, int] = {current: 0}
    while (node := w.peek()) is not None and not (node.op_type == "Clip" and w.clip_bounds(node)[1] is None):
        if node.op_type == "Conv":
            conv_node = w.take("Conv", current, f"conv {len(weights.convs)}")
            layer = _read_conv(w, conv_node)
            current = conv_node.output[0]
            nxt = w.peek()
            if nxt is not None and nxt.op_type == "Clip" and nxt.input[0] == current and w.clip_bounds(nxt)[1] is not None:
                clip = w.take("Clip", current, "ReLU6")
                low, high = w.clip_bounds(clip)
                if low != 0.0 or high != 6.0:
                    raise w.error(clip, f"activation Clip({low}, {high}) is not ReLU6 = Clip(0, 6)")
                layer = dataclasses.replace(layer, relu6=True)
                current = clip.output[0]
            weights.convs.append(layer)
            chain_position.setdefault(current, len(weights.convs))
        elif node.op_type == "Add":
            add = w.take("Add", None, "residual")
            others = [name for name in add.input if name != current]
            if len(add.input) != 2 or len(others) != 1 or others[0] not in chain_position:
                raise w.error(add, f"a residual Add must join the current tensor {current!r} with an earlier tensor of the chain, got {list(add.input)}")
            first = chain_position[others[0]]
            if first >= len(weights.convs):
                raise w.error(add, "the residual spans no conv")
            weights.residuals.append((first, len(weights.convs) - 1))
            current = add.output[0]
            chain_position.setdefault(current, len(weights.convs))
        else:
            raise w.error(node, "expected Conv, Clip(0, 6) after a Conv, or a residual Add in the backbone")
    if not weights.convs:
        raise ModelGraphError(f"{source}: the graph has no convs")

    clamp = w.take("Clip", current, "GeM clamp")
    low, _ = w.clip_bounds(clamp)
    if low is None or low <= 0:
        raise w.error(clamp, f"the GeM clamp needs a positive min, got {low}")
    power = w.take("Pow", clamp.output[0], "GeM x^p")
    p = w.scalar(power, 1, "GeM p")
    if p <= 0:
        raise w.error(power, f"GeM p must be > 0, got {p}")
    mean_node = w.take("ReduceMean", power.output[0], "GeM spatial mean")
    attrs = w.attrs(mean_node)
    axes = attrs.get("axes")
    if axes is None and len(mean_node.input) > 1:  # opset 18 moved axes to an input
        axes = w.constant(mean_node, 1, "axes").tolist()
    if sorted(int(a) % 4 for a in (axes or [])) != [2, 3] or int(attrs.get("keepdims", 1)) != 0:
        raise w.error(mean_node, f"expected a mean over H and W without keepdims, got axes {axes} keepdims {attrs.get('keepdims', 1)}")
    root = w.take("Pow", mean_node.output[0], "GeM ^(1/p)")
    _check_close(w, root, "the GeM root exponent", w.scalar(root, 1, "1/p"), 1.0 / p)
    pooled = root.output[0]
    square = w.take("Pow", pooled, "L2 square")
    _check_close(w, square, "the L2 exponent", w.scalar(square, 1, "2"), 2.0)
    total = w.take("ReduceSum", square.output[0], "L2 sum")
    sum_axes = w.constant(total, 1, "axes").tolist() if len(total.input) > 1 and total.input[1] else w.attrs(total).get("axes")
    if [int(a) for a in np.atleast_1d(sum_axes)] not in ([1], [-1]) or int(w.attrs(total).get("keepdims", 1)) != 1:
        raise w.error(total, f"expected a sum over channels with keepdims, got axes {sum_axes}")
    sqrt = w.take("Sqrt", total.output[0], "L2 norm")
    floor = w.take("Clip", sqrt.output[0], "L2 norm clamp")
    l2_eps, _ = w.clip_bounds(floor)
    if l2_eps is None or l2_eps <= 0:
        raise w.error(floor, f"the L2 norm clamp needs a positive min, got {l2_eps}")
    out = w.take("Div", pooled, "L2 division")
    if list(out.input) != [pooled, floor.output[0]] or out.output[0] != output_name:
        raise w.error(out, f"expected {output_name!r} = {pooled!r} / {floor.output[0]!r}, got {list(out.output)} = {list(out.input)}")
    if w.peek() is not None:
        raise w.error(w.peek(), "unexpected node after the graph output")
    weights.gem_p, weights.gem_eps, weights.l2_eps = p, float(low), float(l2_eps)
    weights.output_dim = int(weights.convs[-1].weight.shape[0])
    return weights


__all__ = ["ConvLayer", "GraphWeights", "ModelGraphError", "read_graph_weights"]
