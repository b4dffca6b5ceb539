from __future__ import annotations

import json

import numpy as np
import pytest

from cvserve.preprocess.spec import PreprocessError, PreprocessSpec


def test_default_spec_is_the_classification_contract() -> None:
    spec = PreprocessSpec()
    assert (spec.resize_mode, spec.resize_shorter, spec.crop) == ("shorter_crop", 256, (224, 224))
    assert spec.output_shape == (3, 224, 224) and spec.output_size == spec.crop
    assert (spec.dtype, spec.layout, spec.device, spec.antialias) == ("float32", "CHW", "cpu", True)
    assert set(spec.formats) == {"jpeg", "png", "webp", "bmp"}


def test_spec_round_trips_through_json() -> None:
    spec = PreprocessSpec(
        resize_mode="letterbox",
        crop=(320, 480),
        pad_value=(0.0, 10.0, 20.0),
        dtype="float16",
        layout="HWC",
        formats=("jpeg",),
        max_pixels=1000,
    )
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_output_shape_follows_layout() -> None:
    assert PreprocessSpec(crop=(10, 20), layout="HWC").output_shape == (10, 20, 3)
    assert PreprocessSpec(crop=(10, 20)).output_shape == (3, 10, 20)


def test_normalized_pad_is_the_pad_value_normalised() -> None:
    spec = PreprocessSpec(pad_value=(1.0, 2.0, 3.0), mean=(1.0, 1.0, 1.0), std=(1.0, 2.0, 4.0))
    np.testing.assert_allclose(spec.normalized_pad, (0.0, 0.5, 0.5))


@pytest.mark.parametrize(
    "bad",
    [
        {"resize_mode": "stretch"},
        {"dtype": "uint8"},
        {"layout": "NCHW"},
        {"device": "tpu"},
        {"formats": ("gif",)},
        {"formats": ()},
        {"crop": (0, 224)},
        {"std": (1.0, 0.0, 1.0)},
        {"mean": (1.0, 2.0)},
        {"max_pixels": 0},
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PreprocessSpec(**bad)  # type: ignore[arg-type]


def test_preprocess_error_keeps_reason_and_index() -> None:
    error = PreprocessError("empty input (0 bytes)").at(3)
    assert (error.reason, error.index, str(error)) == (
        "empty input (0 bytes)",
        3,
        "image 3: empty input (0 bytes)",
    )
