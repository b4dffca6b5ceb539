from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.spec import PreprocessError, PreprocessSpec
from cvserve.preprocess.synthetic import synthetic_image

SPEC = PreprocessSpec()


@pytest.fixture(scope="module")
def dali() -> DaliPreprocessor:
    return DaliPreprocessor(SPEC, max_batch_size=4, num_threads=1)


def torchvision_reference(data: bytes) -> np.ndarray:
    """The same spec with torchvision (antialiased bilinear resize, centre crop, normalise)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    image = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
    image = F.resize(image.float(), [SPEC.resize_shorter], antialias=SPEC.antialias)
    image = F.center_crop(image, list(SPEC.crop))
    mean = torch.tensor(SPEC.mean).view(3, 1, 1)
    std = torch.tensor(SPEC.std).view(3, 1, 1)
    return ((image - mean) / std).numpy()


# Sizes whose centre-crop anchor is a whole pixel in both libraries (DALI rounds .5 up).
@pytest.mark.parametrize(
    ("width", "height", "fmt"), [(300, 200, "jpeg"), (1024, 512, "png"), (256, 384, "jpeg")]
)
def test_dali_cpu_matches_torchvision_within_contract(
    dali: DaliPreprocessor, width: int, height: int, fmt: str
) -> None:
    data = synthetic_image(width, height, seed=width, fmt=fmt)
    (out,) = dali([data])
    assert out.shape == SPEC.output_shape and out.dtype == np.float32
    diff = np.abs(out - torchvision_reference(data))
    assert diff.mean() < 0.02 and diff.max() < 0.5, (diff.mean(), diff.max())


def test_one_bad_image_fails_only_itself(dali: DaliPreprocessor) -> None:
    good = synthetic_image(200, 150)
    # Headers intact (passes the header check) but no scan data: only the decoder can tell.
    no_scan = good[: good.index(b"\xff\xda")] + b"\xff\xd9"
    results = dali([good, b"", no_scan, good, b"not an image"])
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["ndarray", "PreprocessError", "PreprocessError", "ndarray", "PreprocessError"]
    assert "empty" in results[1].reason
    assert results[2].index == 2 and "corrupt JPEG" in results[2].reason
    np.testing.assert_array_equal(results[0], results[3])


def test_batches_larger_than_the_pipeline_are_split(dali: DaliPreprocessor) -> None:
    images = [synthetic_image(64 + i, 64, seed=i) for i in range(9)]
    batch = dali.run_batch(images)
    assert batch.shape == (9, *SPEC.output_shape)
    np.testing.assert_array_equal(batch[5], dali.run_batch([images[5]])[0])


def test_run_batch_raises_the_bad_images_error(dali: DaliPreprocessor) -> None:
    with pytest.raises(PreprocessError, match="image 1: empty"):
        dali.run_batch([synthetic_image(64, 64), b""])
