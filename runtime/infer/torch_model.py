"""The descriptor model as a PyTorch module: EfficientNet-Lite0 (BatchNorm folded) + GeM + L2.

Imports torch at module level; only ``runtime.infer.torch`` imports this module, inside
``TorchBackend.activate()``, so importing ``runtime`` never imports torch. The normalisation
and pooling layers are also the ones ``onnx_export.model`` exports (it imports them from
here), so export and runtime cannot drift apart.

Note [Inference-form EfficientNet-Lite0]
----------------------------------------
The shipped ONNX file is the exported ``onnx_export.model.EmbeddingModel`` after the
exporter folded every BatchNorm into the preceding conv and merged TF-"SAME" zero pads
into the convs' ``pads``. ``EmbeddingNet`` is that graph as a module: each conv has a bias
and no BatchNorm, TF-"SAME" padding is computed for the static input size (asymmetric on
stride-2 layers: the extra row/column goes at the bottom/right), ReLU6 after every conv
except the blocks' projections, and residual adds on the stride-1 blocks whose input and
output widths match (EfficientNet-Lite: no squeeze-excite, stem and head not scaled).
``load_embedding_net`` builds it for the ONNX file's input size and copies the weights in
graph order (see Note [Reading the ONNX graph by structure] in ``runtime.infer.onnx_graph``)
after checking every conv's shape, stride, groups, padding and activation and the residual
spans against the module; any difference raises ``ModelGraphError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runtime.infer.onnx_graph import GraphWeights, ModelGraphError, read_graph_weights

# EfficientNet-Lite0 stages: (expand ratio, kernel, stride, output channels, repeats);
# tensorflow/tpu models/official/efficientnet/lite (width 1.0, depth 1.0).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
LITE0_STEM = 32
LITE0_HEAD = 1280


class ImageNormalization(nn.Module):
    """Casts uint8 NCHW images to float32 and applies per-channel ``(x - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(torch.float32) - self.mean) / self.std


class GeM(nn.Module):
    """Generalised-mean pooling over H and W: ``mean(clamp(x, eps) ** p) ** (1 / p)``.

    ``p`` is an ``nn.Parameter`` as in the GeM paper (Radenović et al., 2018), frozen
    unless ``learnable``.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p}")
        self.p = nn.Parameter(torch.tensor([float(p)]), requires_grad=learnable)
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3))
        return pooled.pow(1.0 / self.p)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||_2, eps)`` over dim 1.

    Written out rather than ``F.normalize``, whose ``expand_as`` adds Shape/Expand nodes to
    an exported graph.
    """
    norms = x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=eps)
    return x / norms


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF "SAME" padding of one axis: (begin, end, output size)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class FoldedConv(nn.Module):
    """Conv with bias (BatchNorm folded in), TF-"SAME" zero padding, optional ReLU6.

    Asymmetric padding (one more row/column at the end, stride-2 layers) is done one of two
    ways, with identical results: ``pad_mode="pad"`` pads explicitly (``F.pad``) and runs the
    k x k conv; ``"kernel"`` runs a (k+1) x (k+1) conv whose first row/column of taps is
    zero with symmetric padding (begin + 1): each output then reads the same k x k window. The
    second avoids a padded copy of the input, which costs more than the conv on the CPU.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, size: tuple[int, int],
                 relu6: bool, pad_mode: str = "pad") -> None:
        super().__init__()
        if pad_mode not in ("pad", "kernel"):
            raise ValueError(f"pad_mode must be one of ('pad', 'kernel'), got {pad_mode!r}")
        top, bottom, out_h = same_padding(size[0], kernel, stride)
        left, right, out_w = same_padding(size[1], kernel, stride)
        self.pads = (top, left, bottom, right)
        self.out_size = (out_h, out_w)
        self.weight_shape = (out_ch, in_ch // groups, kernel, kernel)
        self.symmetric = top == bottom and left == right
        self.extend = (0, 0)
        padding = (top, left)
        if not self.symmetric and pad_mode == "kernel":
            self.extend = (bottom - top, right - left)  # 0 or 1 per axis ("SAME" puts the odd row at the end)
            padding, self.symmetric = (bottom, right), True
        k = (kernel + self.extend[0], kernel + self.extend[1])
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, groups=groups, bias=True, padding=padding if self.symmetric else 0)
        self.relu6 = relu6

    def load(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Copies a k x k weight (``weight_shape``) and the bias (in place, no grad)."""
        dh, dw = self.extend
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, dh:, dw:].copy_(weight)
            self.conv.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            top, left, bottom, right = self.pads
            x = F.pad(x, (left, right, top, bottom))
        x = self.conv(x)
        # in place: the conv's output is a fresh tensor (inference only); saves an allocation
        return F.relu6(x, inplace=True) if self.relu6 else x


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand + ReLU6] -> depthwise + ReLU6 -> 1x1 project [+ input]."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int, size: tuple[int, int], pad_mode: str = "pad") -> None:
        super().__init__()
        mid = in_ch * expand
        layers = []
        if expand != 1:
            layers.append(FoldedConv(in_ch, mid, 1, 1, 1, size, relu6=True))
        depthwise = FoldedConv(mid, mid, kernel, stride, mid, size, relu6=True, pad_mode=pad_mode)
        layers += [depthwise, FoldedConv(mid, out_ch, 1, 1, 1, depthwise.out_size, relu6=False)]
        self.layers = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch
        self.out_size = depthwise.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return y.add_(x) if self.residual else y  # y is the projection's fresh output


class EmbeddingNet(nn.Module):
    """uint8 RGB NCHW images -> L2-normalised float32 GeM embeddings (Note [Inference-form EfficientNet-Lite0]).

    Args:
        image_size: (H, W) of the input (fixes the "SAME" padding of every conv).
        mean, std: per-channel input normalisation.
        gem_p, gem_eps: GeM pooling.
        l2_eps: clamp of the L2 norm.
        pad_mode: how the stride-2 convs' asymmetric padding is done (see ``FoldedConv``).
    """

    def __init__(self, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 gem_p: float = 3.0, gem_eps: float = 1e-6, l2_eps: float = 1e-12, pad_mode: str = "pad") -> None:
        super().__init__()
        self.normalize = ImageNormalization(mean, std)
        stem = FoldedConv(len(mean), LITE0_STEM, 3, 2, 1, image_size, relu6=True, pad_mode=pad_mode)
        size, channels = stem.out_size, LITE0_STEM
        blocks: list[nn.Module] = [stem]
        for expand, kernel, stride, out_ch, repeats in LITE0_STAGES:
            for i in range(repeats):
                block = MBConv(channels, out_ch, expand, kernel, stride if i == 0 else 1, size, pad_mode)
                blocks.append(block)
                size, channels = block.out_size, out_ch
        blocks.append(FoldedConv(channels, LITE0_HEAD, 1, 1, 1, size, relu6=True))
        self.backbone = nn.Sequential(*blocks)
        self.pool = GeM(p=gem_p, eps=gem_eps)
        self.l2_eps = l2_eps
        self.input_shape = (len(mean), int(image_size[0]), int(image_size[1]))
        self.output_dim = LITE0_HEAD
        self.compute_dtype = torch.float32
        self.memory_format = torch.contiguous_format

    def convs(self) -> Iterator[FoldedConv]:
        """The convs in execution order (the order of the ONNX graph's Conv nodes)."""
        return (m for m in self.backbone.modules() if isinstance(m, FoldedConv))

    def residual_spans(self) -> list[tuple[int, int]]:
        """(first, last) conv index of each residual block, in the convention of ``GraphWeights.residuals``."""
        spans, index = [], 0
        for block in self.backbone:
            count = sum(1 for m in block.modules() if isinstance(m, FoldedConv))
            if isinstance(block, MBConv) and block.residual:
                spans.append((index, index + count - 1))
            index += count
        return spans

    def set_compute(self, dtype: torch.dtype, channels_last: bool) -> EmbeddingNet:
        """Run the backbone in ``dtype`` and memory format; normalisation and pooling stay float32.

        Returns:
            self.
        """
        self.compute_dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone.to(dtype=dtype, memory_format=self.memory_format)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images).to(dtype=self.compute_dtype, memory_format=self.memory_format)
        features = self.backbone(x)
        # GeM's x^3 and the spatial mean in float32 (x <= 6 after ReLU6, so FP16 would not
        # overflow, but small activations would underflow); cheap at (N, 1280, 7, 7).
        return l2_normalize(self.pool(features.float()), self.l2_eps)


def load_weights(net: EmbeddingNet, weights: GraphWeights, source: str = "ONNX model") -> None:
    """Copies ``weights`` into ``net`` after checking the structure (Note [Inference-form EfficientNet-Lite0]).

    Args:
        net: an ``EmbeddingNet`` built for ``weights.input_shape``.
        weights: from ``read_graph_weights``.
        source: the file name, for messages.

    Raises:
        ModelGraphError: the numbers of convs differ, a conv differs in shape, stride, groups,
            padding, dilation or activation, or the residual spans differ.
    """
    convs = list(net.convs())
    if len(convs) != len(weights.convs):
        raise ModelGraphError(f"{source}: the graph has {len(weights.convs)} convs, the EfficientNet-Lite0 module has {len(convs)}")
    for index, (module, layer) in enumerate(zip(convs, weights.convs)):
        conv = module.conv
        expected: dict[str, Any] = {
            "weight shape": module.weight_shape,
            "stride": tuple(conv.stride),
            "groups": conv.groups,
            "pads (top, left, bottom, right)": module.pads,
            "dilations": tuple(conv.dilation),
            "ReLU6": module.relu6,
            "bias shape": (conv.out_channels,),
        }
        got: dict[str, Any] = {
            "weight shape": tuple(layer.weight.shape),
            "stride": tuple(layer.stride),
            "groups": layer.groups,
            "pads (top, left, bottom, right)": tuple(layer.pads),
            "dilations": tuple(layer.dilations),
            "ReLU6": layer.relu6,
            "bias shape": None if layer.bias is None else tuple(layer.bias.shape),
        }
        for key, value in expected.items():
            if got[key] != value:
                raise ModelGraphError(f"{source}: conv {index} ({layer.node}): {key} is {got[key]} in the graph, the module expects {value}")
    if weights.residuals != net.residual_spans():
        raise ModelGraphError(f"{source}: residual spans (first, last conv) {weights.residuals} in the graph, the module expects {net.residual_spans()}")
    if weights.output_dim != LITE0_HEAD:
        raise ModelGraphError(f"{source}: output dim {weights.output_dim}, the module expects {LITE0_HEAD}")
    for module, layer in zip(convs, weights.convs):
        assert layer.bias is not None  # checked above
        module.load(torch.tensor(layer.weight), torch.tensor(layer.bias))  # copies (the proto's arrays are read-only)


def load_embedding_net(onnx_path: str | Path, pad_mode: str = "pad") -> EmbeddingNet:
    """Builds the module for the ONNX file and loads its weights (float32, CPU, eval mode).

    Args:
        onnx_path: the shipped model (``model_assets/efficientnet_lite0_gem.onnx``).
        pad_mode: see ``FoldedConv``.

    Returns:
        ``EmbeddingNet`` computing the same function as the ONNX graph.

    Raises:
        ModelGraphError: the file is unreadable or its graph does not match the module.
    """
    weights = read_graph_weights(onnx_path)
    channels, height, width = weights.input_shape
    if channels != 3:
        raise ModelGraphError(f"{onnx_path}: expected 3 input channels, got {channels}")
    net = EmbeddingNet((height, width), weights.mean.tolist(), weights.std.tolist(), weights.gem_p, weights.gem_eps, weights.l2_eps, pad_mode)
    load_weights(net, weights, str(onnx_path))
    net.requires_grad_(False)
    return net.eval()


__all__ = ["EmbeddingNet", "GeM", "ImageNormalization", "l2_normalize", "load_embedding_net", "load_weights", "same_padding"]
