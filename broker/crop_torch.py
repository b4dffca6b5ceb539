"""Crops with torchvision on a torch device: nvJPEG decode + crop + nvJPEG encode on CUDA.

The pixels stay on the device from decode to encode; only the encoded crops come back. JPEGs are
decoded by ``decode_jpeg(device=...)`` (nvJPEG on CUDA, which ignores EXIF orientation: it is
applied from the header), other formats on the CPU and moved. All crops of an image are encoded
in one ``encode_jpeg`` call (batched nvJPEG on CUDA). On ``cpu`` the same code runs with
libjpeg-turbo, which is how it is tested on machines without a GPU.
"""

from __future__ import annotations

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from cvserve.preprocess.preprocessor import Encoded
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.torchvision_backend import decode_cpu, orient_chw


def decode_upright(image: bytes, device: str) -> torch.Tensor:
    """Upright RGB (3, H, W) uint8 on ``device``; `PreprocessError` if it cannot be decoded."""
    header = sniff(image)
    image = header.image_bytes(image)  # without a camera's trailer
    try:
        if header.format == "jpeg":
            data = torch.frombuffer(bytearray(image), dtype=torch.uint8)
            pixels = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            return orient_chw(pixels, header.orientation)
        return decode_cpu(Encoded(0, image, header)).to(device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise PreprocessError(f"cannot decode the image to crop: {exc}") from exc


def encode_boxes(
    pixels: torch.Tensor, boxes: list[tuple[int, int, int, int]], quality: int
) -> list[bytes]:
    """JPEG bytes of each (x1, y1, x2, y2) cut of ``pixels`` (3, H, W), encoded together."""
    if not boxes:
        return []
    tiles = [pixels[:, y1:y2, x1:x2].contiguous() for x1, y1, x2, y2 in boxes]
    encoded = encode_jpeg(tiles, quality=quality)
    return [bytes(e.cpu().numpy()) for e in encoded]
