"""The typed preprocessing spec: the one place resize, crop and normalisation parameters live.

Every view is derived from it: the DALI graph (`preprocess.dali`), the float64 reference
(`preprocess.reference`), the Triton tensor shapes (`pipelines.catalog`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# ImageNet statistics in 0..255 pixel units (torchvision's, times 255).
IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Refuse images above this many pixels before decoding (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 64_000_000

ResizeMode = Literal["shorter_crop"]


@dataclass(frozen=True)
class PreprocessSpec:
    """What a preprocessing stage turns encoded image bytes into.

    Output: RGB, normalised as ``(pixel - mean) / std`` with pixels in 0..255, layout CHW,
    shape ``(3, crop[0], crop[1])``, dtype ``dtype``.
    """

    resize_mode: ResizeMode = "shorter_crop"
    resize_shorter: int = 256
    crop: tuple[int, int] = (224, 224)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    antialias: bool = True
    dtype: Literal["float32", "float16"] = "float32"
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = field(default=("jpeg", "png", "webp", "bmp"))

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Per-image output shape (C, H, W)."""
        return (3, *self.crop)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        data = dict(data)
        for key in ("crop", "mean", "std", "formats"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class PreprocessError(ValueError):
    """An image that cannot be preprocessed, with the reason (e.g. ``truncated JPEG``)."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason if index is None else f"image {index}: {reason}")
        self.reason = reason
        self.index = index
