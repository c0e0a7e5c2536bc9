"""Tests for runtime.model_manifest: parsing, validation, checksums and the assets search order."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.model_manifest import (
    MANIFEST_FILENAME,
    ChecksumMismatchError,
    ManifestError,
    ModelManifest,
    candidate_model_dirs,
    default_model_dir,
    load_default_manifest,
    sha256_of_file,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ONNX_BYTES = b"not really onnx, but the manifest only hashes it"


def _manifest_dict(onnx_bytes: bytes = ONNX_BYTES) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "test_model",
        "onnx_file": "model.onnx",
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "opset": 17,
        "input": {"name": "images", "layout": "NCHW", "dtype": "uint8", "batch": "dynamic", "channels": 3,
                  "height": 224, "width": 224, "color": "RGB", "resize": "area", "crop": "squash"},
        "normalization": {"mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "applied_in_graph": True},
        "pooling": {"type": "gem", "p": 3.0, "eps": 1e-6},
        "output": {"name": "embeddings", "dim": 1280, "dtype": "float32", "l2_normalized": True},
        "projection": None,
        "source_weights": {"license": "Apache-2.0"},
        "exporter": {"torch": "x"},
    }


def _write_assets(directory: Path, data: dict[str, Any] | None = None, onnx_bytes: bytes = ONNX_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx_bytes)
    (directory / MANIFEST_FILENAME).write_text(json.dumps(data if data is not None else _manifest_dict(onnx_bytes)))
    return directory


def test_committed_assets_load_and_match_their_sha256():
    manifest = ModelManifest.load(REPO_ROOT / "model_assets")
    manifest.verify()
    assert manifest.onnx_path == REPO_ROOT / "model_assets" / "efficientnet_lite0_gem.onnx"
    assert sha256_of_file(manifest.onnx_path) == manifest.onnx_sha256
    assert (manifest.input.dtype, manifest.input.layout, manifest.input.height, manifest.input.width) == (
        "uint8", "NCHW", 224, 224)
    assert (manifest.input.resize, manifest.input.crop, manifest.input.color) == ("area", "squash", "RGB")
    assert manifest.normalization.applied_in_graph
    assert manifest.normalization.mean == (127.0, 127.0, 127.0)
    assert manifest.normalization.std == (128.0, 128.0, 128.0)
    assert (manifest.output.name, manifest.output.dim, manifest.output.l2_normalized) == ("embeddings", 1280, True)
    assert (manifest.pooling.type, manifest.pooling.p) == ("gem", 3.0)
    assert manifest.opset <= 17
    assert manifest.projection_path == manifest.model_dir / "pca_whitening.npz" and manifest.projection_path.is_file()
    assert manifest.noise_set_path == manifest.model_dir / "noise_set.npz" and manifest.noise_set_path.is_file()
    assert manifest.source_weights["license"] == "Apache-2.0"


def test_load_default_manifest_finds_the_source_checkout_assets():
    # In a source checkout runtime/model_assets does not exist, so the repo-level one wins.
    manifest = load_default_manifest()
    assert manifest.model_dir.resolve() == (REPO_ROOT / "model_assets").resolve()


def test_load_accepts_the_file_or_its_directory(tmp_path):
    _write_assets(tmp_path)
    from_dir = ModelManifest.load(tmp_path)
    from_file = ModelManifest.load(tmp_path / MANIFEST_FILENAME)
    assert from_dir == from_file
    assert from_dir.onnx_path == tmp_path / "model.onnx"
    from_dir.verify()


def test_missing_manifest_raises_file_not_found_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / MANIFEST_FILENAME))):
        ModelManifest.load(tmp_path)


def test_missing_onnx_file_fails_verify(tmp_path):
    _write_assets(tmp_path)
    (tmp_path / "model.onnx").unlink()
    manifest = ModelManifest.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "model.onnx"))):
        manifest.verify()


def test_sha_mismatch_names_both_hashes(tmp_path):
    _write_assets(tmp_path)
    (tmp_path / "model.onnx").write_bytes(ONNX_BYTES + b"!")
    manifest = ModelManifest.load(tmp_path)
    actual = hashlib.sha256(ONNX_BYTES + b"!").hexdigest()
    with pytest.raises(ChecksumMismatchError, match=f"{actual}.*{manifest.onnx_sha256}"):
        manifest.verify()


@settings(max_examples=25, deadline=None)
@given(content=st.binary(min_size=1, max_size=256), data=st.data())
def test_any_single_byte_change_fails_verify(content, data):
    index = data.draw(st.integers(0, len(content) - 1))
    flipped = bytearray(content)
    flipped[index] ^= data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        directory = _write_assets(Path(tmp), onnx_bytes=content)
        ModelManifest.load(directory).verify()
        (directory / "model.onnx").write_bytes(bytes(flipped))
        with pytest.raises(ChecksumMismatchError):
            ModelManifest.load(directory).verify()


def test_projection_path_resolves_and_must_exist(tmp_path):
    data = _manifest_dict()
    data["projection"] = "pca/whitening.npz"
    _write_assets(tmp_path, data)
    manifest = ModelManifest.load(tmp_path)
    assert manifest.projection_path == tmp_path / "pca" / "whitening.npz"
    with pytest.raises(FileNotFoundError, match="whitening.npz"):
        manifest.verify()
    (tmp_path / "pca").mkdir()
    (tmp_path / "pca" / "whitening.npz").write_bytes(b"")
    manifest.verify()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema_version",), 2, "unsupported schema_version 2"),
        (("input", "dtype"), "float32", "input.dtype is 'float32'; supported: ['uint8']"),
        (("input", "layout"), "NHWC", "input.layout is 'NHWC'; supported: ['NCHW']"),
        (("input", "crop"), "center", "input.crop is 'center'; supported: ['squash']"),
        (("input", "height"), 0, "input.height must be > 0, got 0"),
        (("input", "width"), True, "input.width must be int, got True"),
        (("normalization", "mean"), [127.0, 127.0], "normalization.mean must be 3 numbers"),
        (("normalization", "std"), [128.0, 0.0, 128.0], "normalization.std must be > 0"),
        (("pooling", "type"), "avg", "pooling.type is 'avg'; supported: ['gem']"),
        (("output", "dim"), -1, "output.dim must be > 0, got -1"),
        (("onnx_sha256",), "abc", "onnx_sha256 must be 64 hex digits, got 'abc'"),
        (("onnx_file",), "../model.onnx", "onnx_file must be a relative path inside the assets dir"),
        (("projection",), "/abs/pca.npz", "projection must be a relative path inside the assets dir"),
        (("projection",), "pca.txt", "projection must name a .npz file, got 'pca.txt'"),
    ],
)
def test_invalid_fields_raise_manifest_error_naming_the_value(tmp_path, path, value, message):
    data = copy.deepcopy(_manifest_dict())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _write_assets(tmp_path, data)
    with pytest.raises(ManifestError, match=re.escape(message)):
        ModelManifest.load(tmp_path)


@pytest.mark.parametrize("field", ["name", "onnx_file", "input", "output", "normalization", "pooling", "opset"])
def test_missing_required_field_is_named(tmp_path, field):
    data = _manifest_dict()
    del data[field]
    _write_assets(tmp_path, data)
    with pytest.raises(ManifestError, match=f"missing required field {field}"):
        ModelManifest.load(tmp_path)


def test_invalid_json_raises_manifest_error(tmp_path):
    (tmp_path / MANIFEST_FILENAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ModelManifest.load(tmp_path)


def test_default_model_dir_prefers_the_installed_package_copy(tmp_path):
    package_dir = tmp_path / "site" / "runtime"
    _write_assets(package_dir / "model_assets")
    _write_assets(tmp_path / "site" / "model_assets")
    assert default_model_dir(package_dir) == package_dir / "model_assets"


def test_default_model_dir_falls_back_to_the_repo_root(tmp_path):
    package_dir = tmp_path / "repo" / "runtime"
    # A model_assets dir without a manifest (e.g. a partial install) is skipped.
    (package_dir / "model_assets").mkdir(parents=True)
    _write_assets(tmp_path / "repo" / "model_assets")
    assert default_model_dir(package_dir) == tmp_path / "repo" / "model_assets"


def test_default_model_dir_lists_every_searched_path_when_missing(tmp_path):
    package_dir = tmp_path / "runtime"
    package_dir.mkdir()
    expected = candidate_model_dirs(package_dir)
    assert expected == (package_dir / "model_assets", tmp_path / "model_assets")
    with pytest.raises(FileNotFoundError) as excinfo:
        default_model_dir(package_dir)
    for directory in expected:
        assert str(directory / MANIFEST_FILENAME) in str(excinfo.value)
