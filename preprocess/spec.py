"""The typed preprocessing spec: the one place resize, crop, pad and normalisation parameters live.

Every view is derived from it: the DALI graph (`preprocess.dali`), the OpenCV and torchvision
backends, the float64 reference (`preprocess.reference`), the Triton DALI model
(`preprocess.dali_model`) and the Triton tensor shapes (`pipelines.catalog`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from cvserve.pipelines.spec import Device, StageParams

# ImageNet statistics in 0..255 pixel units (torchvision's, times 255).
IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The grey YOLO-style detectors pad letterboxed images with, in 0..255 pixel units.
LETTERBOX_GREY: tuple[float, float, float] = (114.0, 114.0, 114.0)

# Refuse images above this many pixels before decoding (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 64_000_000
# Decoded pixels one batch may hold at once (~0.9 GB as RGB; fits 32 images of 3840x2160): larger
# batches run in parts, so memory stays bounded whatever a request holds.
DEFAULT_MAX_BATCH_PIXELS = 300_000_000

ResizeMode = Literal[
    "shorter_crop", "letterbox", "letterbox_top_left", "fit_height", "fixed", "dynamic"
]
ImageFormat = Literal["jpeg", "png", "webp", "bmp"]
Layout = Literal["CHW", "HWC"]
Channels = Literal["RGB", "BGR"]
DType = Literal["float32", "float16"]

SUPPORTED_FORMATS: tuple[str, ...] = get_args(ImageFormat)


@dataclass(frozen=True)
class PreprocessSpec:
    """What a preprocessing stage turns encoded image bytes into.

    Decoding: ``formats`` accepted (others are refused with a `PreprocessError`); images above
    ``max_pixels`` are refused from their header, before decoding; a batch decodes at most
    ``max_batch_pixels`` at once. Every image becomes 8-bit RGB:
    grey is replicated to 3 channels, alpha is dropped (not composited), CMYK JPEG is converted
    as libjpeg/PIL do, 16-bit PNG becomes ``round(v / 257)``. EXIF orientation (JPEG, PNG, WebP)
    is applied first, as PIL's ``exif_transpose`` does; "original size" means the upright image.

    Geometry (integers, see `preprocess.geometry.placement`), output size ``crop`` = (H, W):

    - ``shorter_crop``: resize the shorter side to ``resize_shorter`` (the longer side rounded
      half up), then centre-crop (H, W), the crop anchor rounded half up (DALI's rule);
    - ``letterbox``: the largest resize keeping the aspect ratio that fits (H, W) (sizes rounded
      half up), centred (offsets rounded down), the rest filled with ``pad_value``;
    - ``letterbox_top_left``: the same resize, placed at the top-left corner (padding on the
      right and bottom only, as many orientation and detection models are trained);
    - ``fit_height``: height resized to H, width to keep the aspect ratio but at most W (then
      squeezed to W), placed top-left, padded on the right (line-recognition models);
    - ``fixed``: resize to exactly (H, W), aspect ratio not kept;
    - ``dynamic``: the output size follows the image (detectors and text detectors with dynamic
      input axes): an image larger than (H, W) is scaled down to fit it (aspect ratio kept, as
      ``letterbox``), a smaller one keeps its size; then each side is padded up to a multiple of
      ``multiple_of``, on the right and bottom. `output_shape` has -1 for H and W; each image
      gets its own (`preprocess.geometry.Placement.out_h`, ``out_w``).

    Resampling is linear; with ``antialias`` its support widens when downscaling (a triangle
    filter, as PIL's BILINEAR and torchvision's ``antialias=True``), borders clamped as DALI
    does (`preprocess.resample`).

    Output: ``(pixel - mean) / std`` with pixels in 0..255 (``pad_value`` too), channels in
    ``channels`` order (``mean``, ``std`` and ``pad_value`` are given in that order), layout
    ``layout``, shape `output_shape`, dtype ``dtype``, on ``device``.
    """

    resize_mode: ResizeMode = "shorter_crop"
    resize_shorter: int = 256
    crop: tuple[int, int] = (224, 224)  # output (height, width) of every resize mode
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    antialias: bool = True
    dtype: DType = "float32"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS
    formats: tuple[str, ...] = field(default=SUPPORTED_FORMATS)
    pad_value: tuple[float, float, float] = LETTERBOX_GREY
    layout: Layout = "CHW"
    device: Device = "cpu"
    channels: Channels = "RGB"
    multiple_of: int = 32  # ``dynamic`` only: each output side is a multiple of it

    def __post_init__(self) -> None:
        for name, kind in (
            ("resize_mode", ResizeMode),
            ("dtype", DType),
            ("layout", Layout),
            ("device", Device),
            ("channels", Channels),
        ):
            if getattr(self, name) not in get_args(kind):
                raise ValueError(
                    f"{name} must be one of {get_args(kind)}, not {getattr(self, name)!r}"
                )
        unknown = set(self.formats) - set(SUPPORTED_FORMATS)
        if unknown or not self.formats:
            raise ValueError(
                f"formats must be a non-empty subset of {SUPPORTED_FORMATS}: {self.formats}"
            )
        if len(self.crop) != 2 or min(self.crop) < 1 or self.resize_shorter < 1:
            raise ValueError(
                f"sizes must be positive: crop {self.crop}, shorter {self.resize_shorter}"
            )
        if not (len(self.mean) == len(self.std) == len(self.pad_value) == 3):
            raise ValueError("mean, std and pad_value need one value per RGB channel")
        if 0 in self.std:
            raise ValueError(f"std must not be zero: {self.std}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be positive, not {self.multiple_of}")
        if self.max_pixels < 1 or self.max_batch_pixels < 1:
            raise ValueError(
                f"pixel limits must be positive: {self.max_pixels}, {self.max_batch_pixels}"
            )

    @property
    def dynamic(self) -> bool:
        """Whether each image gets its own output size (``resize_mode="dynamic"``)."""
        return self.resize_mode == "dynamic"

    @property
    def output_size(self) -> tuple[int, int]:
        """Output (height, width) in pixels; for ``dynamic``, the largest an image is resized to
        (its output is that, padded up to ``multiple_of``)."""
        return self.crop

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Per-image output shape: (3, H, W) for CHW, (H, W, 3) for HWC; -1 for H and W when
        ``dynamic``."""
        size = (-1, -1) if self.dynamic else self.crop
        return (3, *size) if self.layout == "CHW" else (*size, 3)

    @property
    def normalized_pad(self) -> tuple[float, float, float]:
        """``pad_value`` in output (normalised) units, in ``channels`` order."""
        return tuple(
            (p - m) / s for p, m, s in zip(self.pad_value, self.mean, self.std, strict=True)
        )  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        data = dict(data)
        for key in ("crop", "mean", "std", "formats", "pad_value"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class PreprocessParams(StageParams):
    """Parameters of a preprocessing stage: its spec, CPU threads per instance, and the backend
    (`preprocess.backends`) its python-backend adapter runs."""

    spec: PreprocessSpec
    num_threads: int
    backend: str = "dali"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessParams:
        return cls(**{**data, "spec": PreprocessSpec.from_dict(data["spec"])})

    def on_device(self, device: Device) -> PreprocessParams:
        """The adapter preprocesses on its spec's device: it moves with the stage."""
        return replace(self, spec=replace(self.spec, device=device))


class PreprocessError(ValueError):
    """An image that cannot be preprocessed, with the reason (e.g. ``truncated JPEG``).

    The input's fault, never worth a retry: a Triton stage answers it with INVALID_ARG
    (`models.errors`), which a client reads from the status code, not from this text.
    """

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason if index is None else f"image {index}: {reason}")
        self.reason = reason
        self.index = index

    def at(self, index: int) -> PreprocessError:
        """The same reason, attributed to image ``index`` of a batch."""
        return PreprocessError(self.reason, index)
