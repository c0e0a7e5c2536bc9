"""The GPU-host transfer machinery, on the CPU: pack -> parts -> stage (any order, resumable) -> install.

Covers ``benchmarks/gpu_host/bundle.py`` (the offline TensorRT bundle and the GPU-check payload both
travel through it), ``benchmarks/gpu_host/wheelset.py`` (the cp312 wheel-set checks of the GPU check's
dry run), the ``--fake`` flow of ``benchmarks/gpu_host_checks.sh`` and the TensorRT backend's tactic
sources (the bundle ships stubs instead of cuBLAS/cuDNN, so a build must not select them).
All on small synthetic payloads; nothing is downloaded.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu_host"))
import bundle  # noqa: E402
import wheelset  # noqa: E402

PART = 16 << 10  # 16 KiB parts: a ~100 KiB payload gives several


def make_payload(root: Path) -> Path:
    """A small tree like the bundle's: nested folders, binary 'libraries', text, links, modes, an empty folder."""
    rng = random.Random(0)
    src = root / "payload"
    (src / "python" / "bin").mkdir(parents=True)
    (src / "site" / "pkg" / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "python" / "bin" / "python3.10").write_bytes(b"\x7fELF" + rng.randbytes(30_000))
    (src / "python" / "bin" / "python3.10").chmod(0o755)
    (src / "python" / "bin" / "python3").symlink_to("python3.10")
    (src / "site" / "pkg" / "__init__.py").write_text("VALUE = 1\n" * 500)
    (src / "site" / "pkg" / "lib.so.8").write_bytes(rng.randbytes(40_000) + bytes(30_000))
    (src / "site" / "pkg" / "lib.so").symlink_to("lib.so.8")
    (src / "site" / "pkg" / "sub" / "data.bin").write_bytes(rng.randbytes(25_000))
    (src / "env.sh").write_text("export X=1\n")
    return src


def tree(root: Path) -> dict[str, tuple]:
    """Everything that must survive the trip: paths, kinds, bytes, permission bits, link targets."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel == ".bundle-manifest.json":
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return out


@pytest.fixture(params=["xz", "zstd", "none"])
def packed(request, tmp_path):
    if request.param == "zstd" and shutil.which("zstd") is None:
        pytest.skip("no zstd program")
    src = make_payload(tmp_path)
    out = tmp_path / "parts"
    manifest = bundle.pack(src, out, PART, compressor=request.param, level=6, name="test", nice=False)
    return src, out, manifest


def carry_dirs(out: Path, tmp_path: Path, order: list[int]) -> list[Path]:
    """One folder per device call, as `carry` would bring it: the manifest and one part."""
    calls = []
    for k in order:
        call = tmp_path / f"call{k}"
        call.mkdir()
        shutil.copy(out / bundle.MANIFEST, call)
        shutil.copy(out / bundle.part_name(k), call)
        calls.append(call)
    return calls


def test_pack_splits_into_checksummed_parts(packed):
    _, out, manifest = packed
    parts = manifest["parts"]
    assert len(parts) >= 2 and [p["name"] for p in parts] == [bundle.part_name(i) for i in range(len(parts))]
    assert all(p["size"] == PART for p in parts[:-1]) and 0 < parts[-1]["size"] <= PART
    assert sum(p["size"] for p in parts) == manifest["archive"]["size"]
    for p in parts:
        assert bundle.sha256_file(out / p["name"]) == p["sha256"]
    assert json.loads((out / bundle.MANIFEST).read_text()) == manifest
    assert not list(out.glob("*.tmp"))


def test_stage_in_order_then_install_gives_the_same_tree(packed, tmp_path):
    src, out, manifest = packed
    stage_dir, dest = tmp_path / "stage", tmp_path / "opt" / "bundle"
    for call in carry_dirs(out, tmp_path, list(range(len(manifest["parts"])))):
        lines = bundle.stage([call], stage_dir)
        assert "staged" in lines[0]
    assert bundle.status(stage_dir)[1] == []
    assert "installed" in bundle.install(stage_dir, dest)
    assert tree(dest) == tree(src)
    assert bundle.install(stage_dir, dest).startswith("already installed")


def test_out_of_order_and_repeated_staging(packed, tmp_path):
    src, out, manifest = packed
    n = len(manifest["parts"])
    order = list(range(n))[::-1]
    order = order[1:] + order[:1]
    stage_dir, dest = tmp_path / "stage", tmp_path / "dest"
    for call in carry_dirs(out, tmp_path, order):
        bundle.stage([call / bundle.part_name(int(call.name[4:]))], stage_dir)
    again = bundle.stage([out / bundle.part_name(0)], stage_dir, out / bundle.MANIFEST)
    assert again[0] == "part-000: already staged, skipped"
    assert again[-1] == f"{n}/{n} parts staged in {stage_dir}"
    bundle.install(stage_dir, dest)
    assert tree(dest) == tree(src)


def test_missing_part_is_named(packed, tmp_path):
    _, out, manifest = packed
    n = len(manifest["parts"])
    stage_dir = tmp_path / "stage"
    calls = carry_dirs(out, tmp_path, [k for k in range(n) if k != 1])
    for call in calls:
        bundle.stage([call], stage_dir)
    assert bundle.status(stage_dir) == ([bundle.part_name(k) for k in range(n) if k != 1], ["part-001"])
    with pytest.raises(bundle.BundleError, match="missing parts part-001") as err:
        bundle.install(stage_dir, tmp_path / "dest")
    assert err.value.code == 2 and not (tmp_path / "dest").exists()
    assert bundle.main(["status", "--stage-dir", str(stage_dir)]) == 2
    assert bundle.main(["install", "--stage-dir", str(stage_dir), "--dest", str(tmp_path / "dest")]) == 2
    with pytest.raises(bundle.BundleError, match="not found"):
        bundle.stage([tmp_path / "nowhere" / "part-009"], stage_dir)


def test_corrupt_part_is_refused_then_recovered(packed, tmp_path, capsys):
    src, out, manifest = packed
    n = len(manifest["parts"])
    stage_dir, dest = tmp_path / "stage", tmp_path / "dest"
    calls = carry_dirs(out, tmp_path, list(range(n)))
    bad = calls[1] / "part-001"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    bundle.stage([calls[0]], stage_dir)
    with pytest.raises(bundle.BundleError, match="part-001 is corrupt .*sha256") as err:
        bundle.stage([calls[1]], stage_dir)
    assert err.value.code == 3 and not (stage_dir / "part-001").exists()
    assert bundle.main(["stage", str(calls[1]), "--stage-dir", str(stage_dir)]) == 3
    assert "corrupt" in capsys.readouterr().err
    bad.write_bytes(bytes(data[:-7]))  # truncated in transit
    with pytest.raises(bundle.BundleError, match="size"):
        bundle.stage([calls[1]], stage_dir)
    for call in calls[2:]:
        bundle.stage([call], stage_dir)
    # a part that rots after staging is caught at install, removed, and can be staged again
    shutil.copy(out / "part-001", stage_dir / "part-001")
    staged = stage_dir / bundle.part_name(n - 1)
    rotten = bytearray(staged.read_bytes())
    rotten[0] ^= 1
    staged.write_bytes(bytes(rotten))
    with pytest.raises(bundle.BundleError, match="corrupt") as err:
        bundle.install(stage_dir, dest)
    assert err.value.code == 3 and not staged.exists() and not dest.exists()
    bundle.stage([out], stage_dir)  # a whole folder of parts: only the missing one is copied
    bundle.install(stage_dir, dest)
    assert tree(dest) == tree(src)


def test_a_new_bundle_replaces_stale_parts(packed, tmp_path):
    src, out, _ = packed
    stage_dir = tmp_path / "stage"
    bundle.stage([out], stage_dir)
    (src / "env.sh").write_text("export X=2\n")
    out2 = tmp_path / "parts2"
    m2 = bundle.pack(src, out2, PART, compressor="none", name="test2", nice=False)
    lines = bundle.stage([out2 / "part-000"], stage_dir, out2 / bundle.MANIFEST)
    assert lines[-1] == f"1/{len(m2['parts'])} parts staged in {stage_dir}"
    bundle.stage([out2], stage_dir)
    bundle.install(stage_dir, tmp_path / "dest")
    assert (tmp_path / "dest" / "env.sh").read_text() == "export X=2\n"


def test_cli_pack_stage_install(tmp_path, capsys):
    src = make_payload(tmp_path)
    out, stage_dir, dest = tmp_path / "p", tmp_path / "s", tmp_path / "d"
    assert bundle.main(["pack", str(src), str(out), "--part-mib", str(PART / (1 << 20)), "--level", "3"]) == 0
    assert bundle.main(["stage", str(out), "--stage-dir", str(stage_dir)]) == 0
    assert bundle.main(["status", "--stage-dir", str(stage_dir)]) == 0
    assert bundle.main(["install", "--stage-dir", str(stage_dir), "--dest", str(dest)]) == 0
    assert "complete" in capsys.readouterr().out
    assert tree(dest) == tree(src)


# -- the wheel set of the GPU check (cp312) ------------------------------------------------------


def fake_wheel(directory: Path, filename: str, files: dict[str, bytes] | None = None) -> Path:
    name, version = filename.split("-")[:2]
    tag = "-".join(filename[: -len(".whl")].split("-")[-3:])
    path = directory / filename
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in (files or {f"{name}/__init__.py": b""}).items():
            zf.writestr(member, data)
        zf.writestr(f"{name}-{version}.dist-info/WHEEL", f"Wheel-Version: 1.0\nTag: {tag}\n")
        zf.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n")
    return path


def test_wheelset_accepts_a_cp312_manylinux_set(tmp_path):
    for f in ["av-19.0.2-cp312-abi3-manylinux_2_28_x86_64.whl", "pycuda-2026.1-cp312-cp312-linux_x86_64.whl",
              "faiss_cpu-1.15.1-cp310-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", "mako-1.4.3-py3-none-any.whl",
              "vcd_runtime-0.1.0-cp312-cp312-linux_x86_64.whl"]:
        fake_wheel(tmp_path, f)
    report = wheelset.check_wheels(sorted(tmp_path.glob("*.whl")), python=(3, 12), budget_bytes=10 << 20)
    assert report.ok, report.problems
    assert {w.project for w in report.wheels} == {"av", "pycuda", "faiss-cpu", "mako", "vcd-runtime"}


@pytest.mark.parametrize("bad, why", [
    ("av-17.1.0-cp310-cp310-manylinux_2_28_x86_64.whl", "not for CPython 3.12"),
    ("numpy-2.0.0-cp312-cp312-macosx_14_0_arm64.whl", "not for Linux x86_64"),
    ("numpy-2.0.0-cp312-cp312-manylinux_2_17_aarch64.whl", "not for Linux x86_64"),
    ("foo-1.0-cp313-abi3-manylinux_2_28_x86_64.whl", "not for CPython 3.12"),
])
def test_wheelset_rejects_wrong_tags(tmp_path, bad, why):
    fake_wheel(tmp_path, "mako-1.4.3-py3-none-any.whl")
    fake_wheel(tmp_path, bad)
    report = wheelset.check_wheels(sorted(tmp_path.glob("*.whl")), python=(3, 12), budget_bytes=10 << 20)
    assert not report.ok and any(why in p for p in report.problems)


def test_wheelset_rejects_two_versions_and_oversize(tmp_path):
    fake_wheel(tmp_path, "mako-1.4.3-py3-none-any.whl")
    fake_wheel(tmp_path, "Mako-1.4.2-py3-none-any.whl")
    report = wheelset.check_wheels(sorted(tmp_path.glob("*.whl")), python=(3, 12), budget_bytes=100)
    assert any("two versions of mako" in p for p in report.problems)
    assert any("over the" in p for p in report.problems)


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("readelf") is None, reason="needs gcc and readelf")
def test_wheelset_native_libraries_resolve(tmp_path):
    """Every DT_NEEDED of an extension is in the set (own folder, $ORIGIN runpath) or provided by the host."""
    lib = tmp_path / "libdep.so.1"
    subprocess.run(["gcc", "-shared", "-x", "c", "-", "-o", str(lib), "-Wl,-soname,libdep.so.1"], input=b"int dep(void){return 1;}", check=True)
    ext = tmp_path / "ext.so"
    subprocess.run(["gcc", "-shared", "-x", "c", "-", "-o", str(ext), "-Wl,--no-as-needed", f"-L{tmp_path}", "-l:libdep.so.1",
                    "-lm", "-Wl,-rpath,$ORIGIN/../pkg.libs"], input=b"int f(void){return 0;}", check=True)
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg.libs").mkdir()
    shutil.copy(ext, site / "pkg" / "ext.so")
    assert wheelset.unresolved_libraries(site) == {"pkg/ext.so": ["libdep.so.1"]}
    shutil.copy(lib, site / "pkg.libs" / "libdep.so.1")
    assert wheelset.unresolved_libraries(site) == {}


# -- the check script's --fake flow ----------------------------------------------------------------


@pytest.mark.slow
def test_gpu_host_checks_fake_flow(tmp_path):
    """`gpu_host_checks.sh remote --fake`: the whole flow here, CUDA steps skipped with reasons, files under OUT."""
    pytest.importorskip("av")
    payload = tmp_path / "payload"
    (payload / "site").mkdir(parents=True)
    (payload / "site" / "carried_marker.py").write_text("CARRIED = True\n" + "#" * 30_000 + "\n")
    carry = tmp_path / "carry"
    manifest = bundle.pack(payload, carry, 24 << 10, compressor="none", name="fake-check", nice=False)
    assert len(manifest["parts"]) == 2
    calls = carry_dirs(carry, tmp_path, [0, 1])
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), VCD_FAKE_VIDEOS="2", PYTHON=sys.executable, VCD_CHECK_WORK=str(tmp_path / "work"))
    script = ["bash", str(REPO / "benchmarks" / "gpu_host_checks.sh"), "remote", "--fake"]
    first = subprocess.run(script, cwd=REPO, env=dict(env, VCD_CHECK_CARRY=str(calls[0])), capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "1/2 parts staged" in first.stdout and "NEXT: carry the next part" in first.stdout, first.stdout + first.stderr
    assert not (out / "bench.json").exists()
    proc = subprocess.run(script, cwd=REPO, env=dict(env, VCD_CHECK_CARRY=str(calls[1])), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2/2 parts staged" in proc.stdout and "installed fake-check" in proc.stdout
    assert (tmp_path / "work" / "payload" / "site" / "carried_marker.py").is_file()
    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= 8 and "summary.txt" in names and "bench.json" in names
    summary = (out / "summary.txt").read_text()
    assert "SKIPPED nvidia-smi" in summary and "fake" in summary
    bench = json.loads((out / "bench.json").read_text())
    assert "skipped" in bench["end_to_end"]["gpu"] and "skipped" not in bench["end_to_end"]["cpu"]
    assert "MISSING" in (out / "verify.txt").read_text()


@pytest.mark.slow
def test_gpu_check_prepare_dry_run_offline():
    """`prepare --dry-run --offline` on the wheels an earlier `prepare` cached: no download; skips when there are none."""
    cache = Path(os.environ.get("VCD_BUNDLE_CACHE", Path.home() / ".cache" / "vcd-gpu-bundle")) / "wheels312"
    if not list(cache.glob("pycuda-*-cp312-*.whl")) or not list((cache / "project").glob("vcd_runtime-*-cp312-*.whl")):
        pytest.skip(f"no cached cp312 wheel set in {cache} (run `bash benchmarks/gpu_host_checks.sh prepare` once, with network)")
    if shutil.which("pyenv") is None or shutil.which("xz") is None:
        pytest.skip("needs pyenv's CPython 3.12 and xz")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_host_checks.sh"), "prepare", "--dry-run", "--offline"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "wheel set ok" in proc.stdout and "imports resolvable (cp312)" in proc.stdout and "dry run: wheel set ok" in proc.stdout


# -- the TensorRT backend keeps cuBLAS/cuDNN tactics off (the bundle only has stubs of them) ----------------


def _trt_module():
    for name in ("runtime.infer.trt", "runtime.backends.trt"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    pytest.skip("no TensorRT backend module found")


def fake_tensorrt():
    """Just enough of the TensorRT 8.5 Python API for TensorRTBackend._build, recording the config."""
    trt = types.SimpleNamespace(__version__="8.5.3.1")
    # TensorRT 8.5's TacticSource values; all five are on by default
    trt.TacticSource = types.SimpleNamespace(CUBLAS=0, CUBLAS_LT=1, CUDNN=2, EDGE_MASK_CONVOLUTIONS=3, JIT_CONVOLUTIONS=4)
    trt.Logger = mock.MagicMock()
    trt.Logger.WARNING = 2
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    trt.float32 = "float32"
    config = mock.MagicMock()
    config.get_tactic_sources.return_value = 0b11111
    network = mock.MagicMock(num_inputs=1, num_outputs=1)
    network.get_input.return_value = types.SimpleNamespace(shape=(-1, 3, 224, 224), name="images", dtype="uint8")
    builder = mock.MagicMock(platform_has_fast_fp16=True)
    builder.create_network.return_value = network
    builder.create_builder_config.return_value = config
    builder.build_serialized_network.return_value = b"engine"
    trt.Builder = mock.MagicMock(return_value=builder)
    trt.OnnxParser = mock.MagicMock(return_value=mock.MagicMock(**{"parse.return_value": True}))
    return trt, config


@pytest.mark.parametrize("allow", [False, True])
def test_trt_build_disables_cublas_cudnn_tactics(tmp_path, monkeypatch, allow):
    module = _trt_module()
    trt, config = fake_tensorrt()
    monkeypatch.setattr(module, "_import_gpu_modules", lambda: (trt, mock.MagicMock()))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    kwargs = {"enable_cublas_cudnn_tactics": True} if allow else {}  # default must be off
    backend = module.TensorRTBackend(onnx, cache_dir=tmp_path / "cache", timing_cache=False, **kwargs)
    context = types.SimpleNamespace(name="Fake GPU", compute_capability=(9, 0))
    params = inspect.signature(backend._build).parameters
    args = (b"onnx", "uint8", context) if "context" in params else (b"onnx", "uint8")
    assert backend._build(*args) == b"engine"
    config.set_flag.assert_called_with("FP16")
    if allow:
        config.set_tactic_sources.assert_not_called()
    else:
        (mask,), _ = config.set_tactic_sources.call_args
        assert mask == 0b11000, "only EDGE_MASK_CONVOLUTIONS and JIT_CONVOLUTIONS may stay on"


def test_resplit_changes_part_size_without_repacking(packed, tmp_path):
    src, out, manifest = packed
    again = bundle.resplit(out, PART // 2)
    assert again["archive"] == manifest["archive"] and len(again["parts"]) > len(manifest["parts"])
    assert sorted(p.name for p in out.glob("part-*")) == [p["name"] for p in again["parts"]]
    bundle.stage([out], tmp_path / "stage")
    bundle.install(tmp_path / "stage", tmp_path / "dest")
    assert tree(tmp_path / "dest") == tree(src)


def test_remote_sh_stages_and_installs_the_trt_bundle(tmp_path):
    """benchmarks/gpu_host/remote.sh on a synthetic bundle: one call per part, then install (+ the project's native parts)."""
    src = make_payload(tmp_path)
    carried = tmp_path / "carried"
    manifest = bundle.pack(src, carried / "trt", PART, compressor="xz", level=1, name="trt-test", nice=False)
    (carried / "project" / "native").mkdir(parents=True)
    (carried / "project" / "native" / "vcd_core.cpython-310-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (carried / "project" / "native" / "preprocess_kernels.fatbin").write_bytes(b"fatbin")
    env = dict(os.environ, VCD_BUNDLE_DIR=str(tmp_path / "call"), VCD_TRT_STAGE=str(tmp_path / "stage"),
               VCD_TRT_HOME=str(tmp_path / "opt"), PYTHON=sys.executable)
    script = ["bash", str(REPO / "benchmarks" / "gpu_host" / "remote.sh")]
    names = [p["name"] for p in manifest["parts"]]
    for k, name in enumerate(names):  # what each device call carries: the manifest and one part
        call = tmp_path / "call"
        shutil.rmtree(call, ignore_errors=True)
        (call / "trt").mkdir(parents=True)
        shutil.copy(carried / "trt" / bundle.MANIFEST, call / "trt")
        shutil.copy(carried / "trt" / name, call / "trt")
        if k == len(names) - 1:
            shutil.copytree(carried / "project", call / "project")
        proc = subprocess.run(script + ["stage"], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and f"{k + 1}/{len(names)} parts staged" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(script + ["install", "status"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed in" in proc.stdout and "project native parts" in proc.stdout
    opt = tmp_path / "opt"
    assert tree(opt / "python") == tree(src / "python") and tree(opt / "site" / "pkg") == tree(src / "site" / "pkg")
    assert (opt / "native" / "preprocess_kernels.fatbin").read_bytes() == b"fatbin"
    assert (opt / "env.sh").read_text() == (REPO / "benchmarks" / "gpu_host" / "env.sh").read_text()
    probe = subprocess.run(["bash", "-c", f"source {opt}/env.sh && echo $VCD_CUDA_FATBIN && echo $PYTHONHOME"],
                           capture_output=True, text=True, timeout=10)
    assert probe.stdout.split() == [str(opt / "native" / "preprocess_kernels.fatbin"), str(opt / "python")]
