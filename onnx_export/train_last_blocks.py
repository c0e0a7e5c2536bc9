"""Fine-tune the last blocks of EfficientNet-Lite0 on the training pack's synthetic copies, on the CPU.

Usage::

    python -m onnx_export.train_last_blocks --pack .train-pack/vcd-train-pack-v1.tar --out .train-runs/last-blocks

Issue 10 item 5 on two cores: the blocks before ``--first-trained-block`` keep their ImageNet weights,
so their output is computed once for every pack image and for each of its synthetic copies
(``onnx_export.synthetic_copies``: the AugLy and own edits the learned whitening was fitted on) and
cached; a training step then runs only the last blocks and the head. BatchNorm statistics stay fixed
(eval mode; their affine parameters train). Each step draws ``--batch-size`` pack images and one of
each image's copies as its second view; the loss is ``onnx_export.train.sscd_loss`` (InfoNCE over the
(image, copy) pairs, images of the same pack group ignored, plus KoLeo), AdamW with warm-up and
cosine decay. A tenth of the pack groups is held out: each epoch logs how often a held-out copy
retrieves its own image among all pack images (top-1), before training included. The result is
exported with ``onnx_export.train.export_trained`` (same contract as ``model_assets/``); refit the
projection on it with ``onnx_export.fit_postprocessing`` before evaluating it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnx_export.model import IMAGE_SIZE, L2_EPS
from onnx_export.train import (
    export_trained,
    learning_rate,
    make_optimizer,
    seed_everything,
    sscd_loss,
)
from runtime.infer.torch_model import l2_normalize

logger = logging.getLogger(__name__)

FEATURE_CACHE = "frozen_features.npz"


class LastBlocks(nn.Module):
    """The trainable tail of an ``EmbeddingModel``: blocks ``first..``, head conv + BN, GeM, L2."""

    def __init__(self, model: nn.Module, first: int) -> None:
        super().__init__()
        backbone = model.backbone
        self.blocks = nn.ModuleList(backbone._blocks[first:])
        self.conv_head, self.bn1, self.act = backbone._conv_head, backbone._bn1, backbone._swish
        self.pool = model.pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, drop_connect_rate=None)
        return l2_normalize(self.pool(self.act(self.bn1(self.conv_head(x)))), L2_EPS)


@torch.inference_mode()
def frozen_features(model: nn.Module, images: np.ndarray, first: int, batch: int = 64) -> np.ndarray:
    """Output of the normalisation, stem and blocks ``0..first-1`` for uint8 NCHW images (float16)."""
    backbone = model.backbone
    out = []
    for start in range(0, len(images), batch):
        x = model.normalize(torch.from_numpy(images[start:start + batch]))
        x = backbone._swish(backbone._bn0(backbone._conv_stem(x)))
        for block in backbone._blocks[:first]:
            x = block(x, drop_connect_rate=None)
        out.append(x.to(torch.float16).numpy())
    return np.concatenate(out)


def pack_inputs(pack: Path, copies_per_image: int, seed: int) -> dict[str, np.ndarray]:
    """The pack's images and their synthetic copies as the runtime's 224 x 224 uint8 NCHW inputs."""
    from onnx_export.synthetic_copies import load_pack_rgb, synthetic_copies
    from runtime.preprocess.config import PreprocessConfig
    from runtime.preprocess.cpu import preprocess_rgb

    images, groups, _ = load_pack_rgb(pack)
    copies = synthetic_copies(images, groups, copies_per_image=copies_per_image, seed=seed)
    config = PreprocessConfig(height=IMAGE_SIZE, width=IMAGE_SIZE)

    def prep(rgbs):
        return np.concatenate([preprocess_rgb(np.ascontiguousarray(im), config) for im in rgbs])

    return {"originals": prep(images), "copies": prep([c.image for c in copies]),
            "source": np.array([c.source for c in copies], np.int64), "groups": np.array(groups)}


def _embed(tail: LastBlocks, features: np.ndarray, batch: int = 128) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([tail(torch.from_numpy(features[i:i + batch]).float()) for i in range(0, len(features), batch)])


def held_out_top1(tail: LastBlocks, data: dict, held: np.ndarray) -> float:
    """Share of held-out copies whose nearest pack image (all of them) is their own."""
    was_training = tail.training
    tail.eval()
    originals = _embed(tail, data["f_originals"])
    rows = np.flatnonzero(np.isin(data["source"], held))
    copies = _embed(tail, data["f_copies"][rows])
    tail.train(was_training)
    nearest = (copies @ originals.t()).argmax(dim=1).numpy()
    return float(np.mean(nearest == data["source"][rows]))


def _set_train_mode(tail: LastBlocks) -> None:
    tail.train()
    for module in tail.modules():  # BatchNorm statistics stay at their ImageNet values
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def run(args: argparse.Namespace) -> dict:
    from onnx_export.model import EmbeddingModel, load_backbone

    seed_everything(args.seed)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = EmbeddingModel(load_backbone()).eval()
    model.requires_grad_(False)
    cache = out / FEATURE_CACHE
    key = json.dumps({"pack_bytes": Path(args.pack).stat().st_size, "first": args.first_trained_block,
                      "copies": args.copies_per_image, "seed": args.seed})
    data = None
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                data = {k: stored[k] for k in ("f_originals", "f_copies", "source", "groups")}
    if data is None:
        started = time.perf_counter()
        inputs = pack_inputs(args.pack, args.copies_per_image, args.seed)
        data = {"f_originals": frozen_features(model, inputs["originals"], args.first_trained_block),
                "f_copies": frozen_features(model, inputs["copies"], args.first_trained_block),
                "source": inputs["source"], "groups": inputs["groups"]}
        np.savez(cache, key=np.array(key), **data)
        logger.info("cached frozen features of %d images and %d copies in %.0f s", len(data["f_originals"]),
                    len(data["f_copies"]), time.perf_counter() - started)
    groups = data["groups"]
    unique_groups = np.unique(groups)
    rng = np.random.default_rng(args.seed)
    held_groups = rng.choice(unique_groups, size=max(1, len(unique_groups) // 10), replace=False)
    held = np.flatnonzero(np.isin(groups, held_groups))
    train = np.setdiff1d(np.arange(len(groups)), held)
    copies_of = {i: np.flatnonzero(data["source"] == i) for i in train}
    group_ids = np.unique(groups, return_inverse=True)[1]

    tail = LastBlocks(model, args.first_trained_block)
    tail.requires_grad_(True)
    tail.pool.p.requires_grad_(False)
    optimizer = make_optimizer(tail, args.lr, args.weight_decay)
    steps_per_epoch = max(1, len(train) // args.batch_size)
    total = steps_per_epoch * args.epochs
    log = [{"epoch": 0, "held_out_top1": held_out_top1(tail, data, held)}]
    logger.info("epoch 0: held-out top-1 %.3f", log[0]["held_out_top1"])
    step, started = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        _set_train_mode(tail)
        order = rng.permutation(train)
        losses = []
        for s in range(steps_per_epoch):
            batch = order[s * args.batch_size:(s + 1) * args.batch_size]
            copy_rows = np.array([rng.choice(copies_of[i]) for i in batch])
            views = torch.from_numpy(np.concatenate([data["f_originals"][batch], data["f_copies"][copy_rows]])).float()
            instances = torch.from_numpy(np.concatenate([batch, batch]))
            batch_groups = torch.from_numpy(np.concatenate([group_ids[batch], group_ids[batch]]))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args.lr, step, step / total, args.warmup_steps)
            result = sscd_loss(tail(views), instances, batch_groups, args.temperature, args.koleo_weight)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            nn.utils.clip_grad_norm_(tail.parameters(), 5.0)
            optimizer.step()
            losses.append(float(result.loss.detach()))
            step += 1
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "held_out_top1": held_out_top1(tail, data, held),
                 "seconds": round(time.perf_counter() - started, 1)}
        log.append(entry)
        logger.info("epoch %d: loss %.4f, held-out top-1 %.3f (%.0f s)", epoch, entry["loss"], entry["held_out_top1"], entry["seconds"])
    info = {"method": "onnx_export.train_last_blocks", "first_trained_block": args.first_trained_block, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "temperature": args.temperature, "koleo_weight": args.koleo_weight,
            "copies_per_image": args.copies_per_image, "seed": args.seed, "held_out_groups": len(held_groups), "log": log}
    (out / "train_log.json").write_text(json.dumps(info, indent=1))
    if not args.no_export:
        exported = export_trained(model, out / "export", info)
        logger.info("exported %s (parity %.3g)", exported["onnx"], exported["max_abs_diff"])
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, required=True, help="training pack tar (onnx_export.training_pack)")
    parser.add_argument("--out", type=Path, required=True, help="run directory: feature cache, log, export/")
    parser.add_argument("--first-trained-block", type=int, default=11, help="MBConv blocks from this index on train (Lite0 has 16)")
    parser.add_argument("--copies-per-image", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128, help="pack images per step (each with one copy)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--koleo-weight", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
