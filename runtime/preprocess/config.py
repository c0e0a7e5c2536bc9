"""The preprocessing contract: output size, resampling, crop and dtype (shared by the CPU and CUDA paths)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Interpolation = Literal["bilinear", "area"]


CropMode = Literal["squash", "center"]


OutputDtype = Literal["uint8", "float32"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Output size and resampling options.

    Attributes:
        height, width: output size in pixels (>= 1).
        interpolation: ``area`` (exact box filter, bilinear on upscaled axes) or
            ``bilinear`` (half-pixel centres, no antialiasing).
        crop: ``squash`` resizes the whole frame; ``center`` takes the centred window with
            the output's aspect ratio first.
        dtype: ``uint8`` (rounded) or ``float32`` (0..255, unrounded).
        num_threads: worker threads, 0 = all cores (results do not depend on it).
    """

    height: int = 224
    width: int = 224
    interpolation: Interpolation = "area"
    crop: CropMode = "squash"
    dtype: OutputDtype = "uint8"
    num_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ValueError(f"num_threads must be an int >= 0 (0 = all cores), got {self.num_threads!r}")
        for name, literal in (("interpolation", Interpolation), ("crop", CropMode), ("dtype", OutputDtype)):
            allowed = get_args(literal)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def _kwargs(self) -> dict[str, object]:
        return {
            "out_height": self.height,
            "out_width": self.width,
            "interpolation": self.interpolation,
            "crop": self.crop,
            "out_dtype": self.dtype,
            "num_threads": self.num_threads,
        }
