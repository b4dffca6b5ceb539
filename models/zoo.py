"""The DNNs cvserve serves: torchvision architectures with seeded random weights by default.

Real weights come from a state-dict file (``weights=PATH``) or, on machines with internet,
torchvision's pretrained ones (``weights="DEFAULT"``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

# name -> (constructor, torchvision weights enum)
CLASSIFIERS: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
    "mobilenet_v3_large": (tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights),
    "mobilenet_v3_small": (tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights),
}


def build_classifier(
    arch: str = "resnet50",
    num_classes: int = 1000,
    seed: int = 0,
    weights: str | Path | None = None,
) -> nn.Module:
    """An eval-mode classifier; the same arch/seed/weights give the same model in any process."""
    if arch not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {arch!r}; choose from {sorted(CLASSIFIERS)}")
    constructor, weights_enum = CLASSIFIERS[arch]
    if weights == "DEFAULT":
        model = constructor(weights=weights_enum.DEFAULT)
    else:
        torch.manual_seed(seed)
        model = constructor(weights=None, num_classes=num_classes)
        if weights:
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
    return model.eval()


def class_names(arch: str, num_classes: int = 1000) -> list[str]:
    """Human-readable class names (ImageNet's for 1000 classes, ``class_<i>`` otherwise)."""
    if num_classes == 1000 and arch in CLASSIFIERS:
        return list(CLASSIFIERS[arch][1].DEFAULT.meta["categories"])
    return [f"class_{i}" for i in range(num_classes)]
