"""The declarations in `models.architectures` agree with the networks the zoo builds."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cvserve.models.architectures import ARCHITECTURES
from cvserve.models.zoo import build_model

# Detection cost depends on what the (random) weights propose: only a lower bound is checked.
DATA_DEPENDENT = {"fasterrcnn_mobilenet_v3_large_320_fpn"}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_declared_multiply_adds_match_the_built_network(name: str) -> None:
    spec = ARCHITECTURES[name]
    assert spec.gmacs is not None, f"{name} declares no gmacs"
    model = build_model(name)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, *spec.input_size))
    measured = counter.get_total_flops() / 2e9  # one multiply-add = 2 FLOPs
    if name in DATA_DEPENDENT:
        assert measured >= spec.gmacs
    else:
        assert measured == pytest.approx(spec.gmacs, rel=0.05, abs=0.01)
