"""The model manifest: the preprocessing/output contract that ships next to the ONNX file.

``model_assets/manifest.json`` is written by ``onnx_export.export``; this module reads
and validates it so that backends never hard-code input size, normalisation or output
dimension. Only the standard library is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Mapping

logger = logging.getLogger(__name__)

MANIFEST_FILENAME = "manifest.json"
MODEL_ASSETS_DIRNAME = "model_assets"
SUPPORTED_SCHEMA_VERSIONS = (1,)
_RUNTIME_PACKAGE_DIR = Path(__file__).resolve().parent

_ALLOWED_LAYOUTS = ("NCHW",)
_ALLOWED_INPUT_DTYPES = ("uint8",)
_ALLOWED_COLORS = ("RGB",)
_ALLOWED_RESIZES = ("area",)
_ALLOWED_CROPS = ("squash",)
_ALLOWED_POOLINGS = ("gem",)
_ALLOWED_OUTPUT_DTYPES = ("float32",)


class ManifestError(ValueError):
    """The manifest is malformed or does not describe a model this runtime can run."""


class ChecksumMismatchError(ManifestError):
    """A model file's sha256 differs from the one recorded in the manifest."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The model input tensor: uint8 ``layout`` images of ``height`` x ``width``, batch dynamic."""

    name: str
    layout: str
    dtype: str
    channels: int
    height: int
    width: int
    color: str
    resize: str
    crop: str


@dataclasses.dataclass(frozen=True)
class NormalizationSpec:
    """Per-channel ``(x - mean) / std``; when ``applied_in_graph`` callers feed raw uint8."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    applied_in_graph: bool


@dataclasses.dataclass(frozen=True)
class PoolingSpec:
    """Global pooling of the backbone's feature map (``gem`` with exponent ``p``)."""

    type: str
    p: float


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """The model output tensor: ``(N, dim)`` ``dtype`` embeddings."""

    name: str
    dim: int
    dtype: str
    l2_normalized: bool


@dataclasses.dataclass(frozen=True)
class ModelManifest:
    """A parsed ``manifest.json`` plus the directory it was loaded from.

    Attributes:
        model_dir: directory holding the manifest; relative file names resolve against it.
        name: model name.
        onnx_file: ONNX file name, relative to ``model_dir``.
        onnx_sha256: expected hex sha256 of the ONNX file.
        opset: ONNX opset of the file.
        input: input tensor contract.
        normalization: input normalisation.
        pooling: pooling head.
        output: output tensor contract.
        projection: optional relative path of an ``.npz`` PCA/whitening file, or None.
        noise_set: optional relative path of the score-normalisation noise set ``.npz`` (training references), or None.
        source_weights: provenance of the weights (packages, dataset, licence).
        exporter: tool versions used for the export.
    """

    model_dir: Path
    name: str
    onnx_file: str
    onnx_sha256: str
    opset: int
    input: InputSpec
    normalization: NormalizationSpec
    pooling: PoolingSpec
    output: OutputSpec
    projection: str | None = None
    noise_set: str | None = None
    source_weights: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    exporter: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def load(cls, path: str | Path) -> ModelManifest:
        """Reads and validates a manifest.

        Args:
            path: the ``manifest.json`` file, or the directory that contains it.

        Returns:
            The parsed ``ModelManifest``. Raises ``FileNotFoundError`` if the file is
            missing and ``ManifestError`` if its content is invalid.
        """
        path = Path(path)
        manifest_path = path / MANIFEST_FILENAME if path.is_dir() else path
        if not manifest_path.is_file():
            raise FileNotFoundError(f"model manifest not found: {manifest_path}")
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ManifestError(f"{manifest_path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ManifestError(f"{manifest_path}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, manifest_path.parent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], model_dir: str | Path) -> ModelManifest:
        """Validates a manifest dict (as found in ``manifest.json``).

        Args:
            data: the decoded JSON object.
            model_dir: directory that relative file names resolve against.

        Returns:
            The parsed ``ModelManifest``; raises ``ManifestError`` on invalid content.
        """
        version = _get(data, "schema_version", int)
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ManifestError(f"unsupported schema_version {version}; supported: {SUPPORTED_SCHEMA_VERSIONS}")
        raw_input = _get(data, "input", dict)
        input_spec = InputSpec(
            name=_get(raw_input, "name", str, "input."),
            layout=_choice(raw_input, "layout", _ALLOWED_LAYOUTS, "input."),
            dtype=_choice(raw_input, "dtype", _ALLOWED_INPUT_DTYPES, "input."),
            channels=_positive_int(raw_input, "channels", "input."),
            height=_positive_int(raw_input, "height", "input."),
            width=_positive_int(raw_input, "width", "input."),
            color=_choice(raw_input, "color", _ALLOWED_COLORS, "input."),
            resize=_choice(raw_input, "resize", _ALLOWED_RESIZES, "input."),
            crop=_choice(raw_input, "crop", _ALLOWED_CROPS, "input."),
        )
        raw_norm = _get(data, "normalization", dict)
        normalization = NormalizationSpec(
            mean=_float_tuple(raw_norm, "mean", input_spec.channels, "normalization."),
            std=_float_tuple(raw_norm, "std", input_spec.channels, "normalization."),
            applied_in_graph=_get(raw_norm, "applied_in_graph", bool, "normalization."),
        )
        if any(s <= 0 for s in normalization.std):
            raise ManifestError(f"normalization.std must be > 0, got {list(normalization.std)}")
        raw_pool = _get(data, "pooling", dict)
        pooling = PoolingSpec(
            type=_choice(raw_pool, "type", _ALLOWED_POOLINGS, "pooling."),
            p=float(_get(raw_pool, "p", (int, float), "pooling.")),
        )
        raw_output = _get(data, "output", dict)
        output = OutputSpec(
            name=_get(raw_output, "name", str, "output."),
            dim=_positive_int(raw_output, "dim", "output."),
            dtype=_choice(raw_output, "dtype", _ALLOWED_OUTPUT_DTYPES, "output."),
            l2_normalized=_get(raw_output, "l2_normalized", bool, "output."),
        )
        sha = _get(data, "onnx_sha256", str).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ManifestError(f"onnx_sha256 must be 64 hex digits, got {sha!r}")
        projection = data.get("projection")
        if projection is not None:
            projection = _relative_file(projection, "projection", suffix=".npz")
        noise_set = data.get("noise_set")
        if noise_set is not None:
            noise_set = _relative_file(noise_set, "noise_set", suffix=".npz")
        return cls(
            model_dir=Path(model_dir),
            name=_get(data, "name", str),
            onnx_file=_relative_file(_get(data, "onnx_file", str), "onnx_file", suffix=".onnx"),
            onnx_sha256=sha,
            opset=_positive_int(data, "opset"),
            input=input_spec,
            normalization=normalization,
            pooling=pooling,
            output=output,
            projection=projection,
            noise_set=noise_set,
            source_weights=MappingProxyType(dict(data.get("source_weights") or {})),
            exporter=MappingProxyType(dict(data.get("exporter") or {})),
        )

    @property
    def onnx_path(self) -> Path:
        """Absolute-or-relative path of the ONNX file (``model_dir / onnx_file``)."""
        return self.model_dir / self.onnx_file

    @property
    def projection_path(self) -> Path | None:
        """Path of the projection ``.npz`` (``model_dir / projection``), or None when unset."""
        return None if self.projection is None else self.model_dir / self.projection

    @property
    def noise_set_path(self) -> Path | None:
        """Path of the noise-set ``.npz`` (``model_dir / noise_set``), or None when unset."""
        return None if self.noise_set is None else self.model_dir / self.noise_set

    def verify(self) -> None:
        """Checks that the ONNX file (and projection, if set) exist and the ONNX sha256 matches.

        Returns:
            None. Raises ``FileNotFoundError`` for a missing file and
            ``ChecksumMismatchError`` when the ONNX file's sha256 differs from the manifest.
        """
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model named by the manifest not found: {self.onnx_path}")
        actual = sha256_of_file(self.onnx_path)
        if actual != self.onnx_sha256:
            raise ChecksumMismatchError(
                f"sha256 of {self.onnx_path} is {actual}, manifest expects {self.onnx_sha256}; "
                "the file is corrupt or was re-exported without updating manifest.json "
                "(re-run `python -m onnx_export.export --out model_assets`)"
            )
        for what, extra in (("projection", self.projection_path), ("noise set", self.noise_set_path)):
            if extra is not None and not extra.is_file():
                raise FileNotFoundError(f"{what} file named by the manifest not found: {extra}")
        logger.debug("verified %s (sha256 %s)", self.onnx_path, actual)


def sha256_of_file(path: str | Path) -> str:
    """Returns the hex sha256 of a file.

    Args:
        path: file to hash (read in 1 MiB chunks).

    Returns:
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def candidate_model_dirs(package_dir: str | Path | None = None) -> tuple[Path, ...]:
    """The directories ``default_model_dir`` searches, in order.

    Args:
        package_dir: the ``runtime`` package directory (default: this package's).

    Returns:
        ``(<package_dir>/model_assets, <package_dir>/../model_assets)``: the copy that
        CMake installs into the wheel first, then the source checkout's.
    """
    package_dir = Path(package_dir) if package_dir is not None else _RUNTIME_PACKAGE_DIR
    return (package_dir / MODEL_ASSETS_DIRNAME, package_dir.parent / MODEL_ASSETS_DIRNAME)


def default_model_dir(package_dir: str | Path | None = None) -> Path:
    """Finds the model assets directory (the first candidate that holds a manifest).

    Args:
        package_dir: the ``runtime`` package directory (default: this package's); tests
            pass a fake one.

    Returns:
        The directory containing ``manifest.json``. Raises ``FileNotFoundError``
        listing every searched path when none has one.
    """
    candidates = candidate_model_dirs(package_dir)
    for candidate in candidates:
        if (candidate / MANIFEST_FILENAME).is_file():
            return candidate
    searched = ", ".join(str(c / MANIFEST_FILENAME) for c in candidates)
    raise FileNotFoundError(f"no model assets found; searched: {searched}")


def load_default_manifest() -> ModelManifest:
    """Loads the manifest from ``default_model_dir()``.

    Returns:
        The parsed ``ModelManifest`` (not yet verified; call ``verify()``).
    """
    return ModelManifest.load(default_model_dir())


_MISSING = object()


def _get(data: Mapping[str, Any], key: str, types: type | tuple[type, ...], prefix: str = "") -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise ManifestError(f"manifest is missing required field {prefix}{key!s}")
    # bool is an int subclass; a JSON true must not pass as an integer field.
    wanted = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        names = " or ".join(t.__name__ for t in wanted)
        raise ManifestError(f"manifest field {prefix}{key} must be {names}, got {value!r}")
    return value


def _positive_int(data: Mapping[str, Any], key: str, prefix: str = "") -> int:
    value = _get(data, key, int, prefix)
    if value <= 0:
        raise ManifestError(f"manifest field {prefix}{key} must be > 0, got {value}")
    return value


def _choice(data: Mapping[str, Any], key: str, allowed: tuple[str, ...], prefix: str = "") -> str:
    value = _get(data, key, str, prefix)
    if value not in allowed:
        raise ManifestError(f"manifest field {prefix}{key} is {value!r}; supported: {list(allowed)}")
    return value


def _float_tuple(data: Mapping[str, Any], key: str, length: int, prefix: str = "") -> tuple[float, ...]:
    value = _get(data, key, list, prefix)
    if len(value) != length or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ManifestError(f"manifest field {prefix}{key} must be {length} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _relative_file(value: Any, key: str, suffix: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"manifest field {key} must be a non-empty relative path, got {value!r}")
    posix = PurePosixPath(value)
    if posix.is_absolute() or ".." in posix.parts or "\\" in value:
        raise ManifestError(f"manifest field {key} must be a relative path inside the assets dir, got {value!r}")
    if posix.suffix != suffix:
        raise ManifestError(f"manifest field {key} must name a {suffix} file, got {value!r}")
    return value
