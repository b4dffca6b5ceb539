"""Where a stage's tensors live (`models.devices`): an instance's device from Triton's args, a
tensor on an unexpected device refused with both devices named."""

from __future__ import annotations

import pytest
import torch

from cvserve.models.devices import instance_device, on_device, settled


@pytest.mark.parametrize(
    ("args", "device"),
    [
        ({"model_instance_kind": "CPU", "model_instance_device_id": "0"}, "cpu"),
        ({"model_instance_kind": "GPU", "model_instance_device_id": "3"}, "cuda:3"),
        ({"model_instance_kind": "GPU"}, "cuda:0"),
        ({}, "cpu"),
    ],
)
def test_an_instance_runs_on_its_kind_and_device_id(args: dict[str, str], device: str) -> None:
    assert instance_device(args) == device


def test_a_tensor_already_there_is_not_copied() -> None:
    x = torch.arange(6)
    assert on_device(x, "cpu", "PIXELS") is x
    settled("cpu")  # nothing to wait for on the CPU


def test_a_tensor_on_another_device_is_refused_naming_both() -> None:
    elsewhere = torch.empty((2, 3), device="meta")  # stands for another GPU than the stage's
    with pytest.raises(ValueError, match="PIXELS arrived on meta, but this instance runs on cpu"):
        on_device(elsewhere, "cpu", "PIXELS")
