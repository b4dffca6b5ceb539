"""The torchvision baseline: ``torchvision.io`` decoding + ``resize`` (+ torch normalisation).

CPU: one image per task in a thread pool (set ``torch.set_num_threads(1)`` for many threads).
CUDA (``spec.device == "gpu"``): the JPEGs of a chunk are decoded together by
``decode_jpeg(device="cuda")`` (nvJPEG), other formats on the CPU; resizing and normalisation
run on the GPU and the pixels stay there (CPU pixels are NumPy arrays). BMP, which
``torchvision.io`` does not read, is decoded by PIL. Filter: ``resize(..., BILINEAR,
antialias=spec.antialias)`` — PIL's triangle filter, on uint8 (CPU) or float32 (CUDA); it
renormalises at the image borders where the spec clamps, so the outermost output row and column
differ (by <= 0.4 normalised units on the test corpus).
"""

from __future__ import annotations

import io
import warnings

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import InterpolationMode

from cvserve.preprocess.geometry import meta, placement
from cvserve.preprocess.pixels import ORIENTATION_STEPS, to_8bit
from cvserve.preprocess.preprocessor import (
    Encoded,
    PerImagePreprocessor,
    Preprocessed,
    Result,
    decoder_error,
    finish,
    normalize_into,
)
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec

# torchvision 0.29 deprecates its decoders in favour of TorchCodec (not a dependency here); the
# warning would repeat on every image.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)


def orient_chw(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (C, H, W) tensor turned upright per its EXIF ``orientation`` (see `ORIENTATION_STEPS`)."""
    transpose, flip_rows, flip_cols = ORIENTATION_STEPS.get(orientation, ORIENTATION_STEPS[1])
    if transpose:
        image = image.transpose(1, 2)
    dims = [d for d, flip in ((1, flip_rows), (2, flip_cols)) if flip]
    return image.flip(dims) if dims else image


def decode_cpu(item: Encoded) -> torch.Tensor:
    """Upright RGB (3, H, W) uint8 on the CPU."""
    if item.header.format == "bmp":
        with Image.open(io.BytesIO(item.data)) as image:
            return F.pil_to_tensor(image.convert("RGB"))
    data = torch.frombuffer(bytearray(item.data), dtype=torch.uint8)
    image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    if image.dtype == torch.uint16:  # 16-bit PNG
        image = torch.from_numpy(to_8bit(image.numpy()))
    if item.header.format == "webp":  # torchvision applies EXIF orientation to JPEG/PNG only
        image = orient_chw(image, item.header.orientation)
    return image


class TorchvisionPreprocessor(PerImagePreprocessor):
    """The spec with torchvision, on the CPU (``threads`` images at a time) or CUDA."""

    name = "torchvision"
    filter = "torchvision resize BILINEAR with antialias (PIL's triangle; borders renormalised)"
    decoder_errors = (RuntimeError, ValueError, OSError, UnidentifiedImageError)

    def __init__(self, spec: PreprocessSpec, max_batch_size: int = 32, threads: int = 1) -> None:
        self.device = torch.device("cuda" if spec.device == "gpu" else "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torchvision CUDA preprocessing needs a CUDA GPU; none is visible")
        # The GPU path: a chunk's JPEGs decoded in one call, then each image in turn, in floats.
        self.batched = self.device.type == "cuda"
        super().__init__(spec, max_batch_size, 1 if self.batched else threads)

    def _process(self, chunk: list[Encoded]) -> list[Result]:
        if not self.batched:
            return super()._process(chunk)
        decoded = self._decode_batched(chunk)
        return [
            d if isinstance(d, PreprocessError) else self._guarded_finish(item, d)
            for item, d in zip(chunk, decoded, strict=True)
        ]

    def _one(self, item: Encoded) -> Preprocessed:
        return self._resize_normalize(decode_cpu(item))

    def _resize_normalize(self, image: torch.Tensor) -> Preprocessed:
        p = placement(image.shape[1], image.shape[2], self.spec)
        if self.batched:  # antialiased resize on CUDA wants floats
            image = image.float()
        resized = F.resize(
            image,
            [p.resized_h, p.resized_w],
            interpolation=InterpolationMode.BILINEAR,
            antialias=self.spec.antialias,
        )
        canvas = torch.empty((p.out_h, p.out_w, 3), dtype=torch.float32, device=image.device)
        normalize_into(canvas, resized.permute(1, 2, 0), p, self.spec)
        pixels = finish(canvas, self.spec)
        return Preprocessed(pixels if pixels.is_cuda else pixels.cpu().numpy(), meta(p))

    def _guarded_finish(self, item: Encoded, image: torch.Tensor) -> Result:
        try:
            return self._resize_normalize(image)
        except self.decoder_errors:
            return decoder_error(item)

    def _decode_batched(self, chunk: list[Encoded]) -> list[torch.Tensor | PreprocessError]:
        """Upright RGB (3, H, W) uint8 on ``self.device``: JPEGs in one ``decode_jpeg`` call (nvJPEG
        on CUDA; one by one if it fails, then on the CPU for the JPEGs it refuses, e.g. CMYK),
        other formats on the CPU."""
        out: list[torch.Tensor | PreprocessError] = [PreprocessError("not decoded")] * len(chunk)
        jpegs = [i for i, item in enumerate(chunk) if item.header.format == "jpeg"]
        datas = [torch.frombuffer(bytearray(chunk[i].data), dtype=torch.uint8) for i in jpegs]
        try:
            decoded = (
                decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device) if datas else []
            )
        except RuntimeError:
            decoded = []
            for data in datas:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
        for i, image in zip(jpegs, decoded, strict=True):
            if image is not None:  # nvJPEG ignores EXIF orientation: apply it from the header
                out[i] = orient_chw(image, chunk[i].header.orientation)
        for i, item in enumerate(chunk):
            if item.header.format != "jpeg" or isinstance(out[i], PreprocessError):
                try:
                    out[i] = decode_cpu(item).to(self.device, non_blocking=True)
                except self.decoder_errors:
                    out[i] = decoder_error(item)
        return out
