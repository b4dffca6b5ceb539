"""The DNNs cvserve serves, as serving modules: a float tensor batch in, tensors out.

Every architecture is a torchvision one (or built from torchvision parts) with seeded random
weights by default; real weights come from a state-dict file (``weights=PATH``) or, on machines
with internet, torchvision's pretrained ones (``weights="DEFAULT"``). What each architecture is
and what its input must look like (size, resize mode, normalisation) is declared once, without
torch, in `cvserve.models.architectures` (re-exported here); this module builds the networks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn
from torch.nn import functional as F

from cvserve.models.architectures import (
    ARCHITECTURES,
    EMBEDDING_DIM,
    HALF_MEAN,
    HALF_STD,
    MAX_DETECTIONS,
    Architecture,
    Builder,
    ResizeMode,
    Task,
    architecture,
)
from cvserve.models.params import DnnParams

__all__ = [
    "ARCHITECTURES",
    "BUILDERS",
    "EMBEDDING_DIM",
    "HALF_MEAN",
    "HALF_STD",
    "MAX_DETECTIONS",
    "Architecture",
    "BrightRegionDetector",
    "Builder",
    "DepthNet",
    "DetectionNet",
    "EmbeddingNet",
    "ResizeMode",
    "SegmentationNet",
    "Task",
    "architecture",
    "build_dnn",
    "build_model",
    "class_names",
    "network",
    "weights_enum",
]


# --- serving modules -------------------------------------------------------------------------


class SegmentationNet(nn.Module):
    """torchvision segmentation model → per-class logits (N, C, H, W) at input resolution."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)["out"]


class DetectionNet(nn.Module):
    """torchvision detector → fixed-shape outputs in model-input pixel coordinates.

    Returns boxes (N, K, 4) x1,y1,x2,y2 float32, scores (N, K) float32, labels (N, K) int64 and
    count (N, 1) int32, padded with zeros past ``count``. Normalisation and resizing are done by
    the preprocessing stage, so the detector's own transform is made an identity.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int], max_detections: int) -> None:
        super().__init__()
        transform = model.transform
        transform.image_mean = [0.0, 0.0, 0.0]
        transform.image_std = [1.0, 1.0, 1.0]
        transform.min_size = (min(input_size),)
        transform.max_size = max(input_size)
        if getattr(transform, "fixed_size", None) is not None:
            transform.fixed_size = input_size
        self.model = model
        self.max_detections = max_detections

    def forward(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        images = list(pixels.unbind(0))
        if torch.jit.is_scripting():  # noqa: SIM108 - scripted detectors return (losses, dets)
            detections = self.model(images)[1]
        else:
            detections = self.model(images)
        n, k = pixels.shape[0], self.max_detections
        boxes = torch.zeros((n, k, 4), dtype=torch.float32, device=pixels.device)
        scores = torch.zeros((n, k), dtype=torch.float32, device=pixels.device)
        labels = torch.zeros((n, k), dtype=torch.int64, device=pixels.device)
        count = torch.zeros((n, 1), dtype=torch.int32, device=pixels.device)
        for i, found in enumerate(detections):
            m = min(int(found["scores"].shape[0]), k)
            boxes[i, :m] = found["boxes"][:m]
            scores[i, :m] = found["scores"][:m]
            labels[i, :m] = found["labels"][:m]
            count[i, 0] = m
        return boxes, scores, labels, count


class BrightRegionDetector(nn.Module):
    """A detector with a fixed, known head: one box around the pixels brighter than ``threshold``
    (normalised units, all channels), score 1, label 1. For checking box mapping end to end —
    not a learned model."""

    def __init__(self, threshold: float = 1.5, max_detections: int = MAX_DETECTIONS) -> None:
        super().__init__()
        self.threshold = threshold
        self.max_detections = max_detections

    def forward(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, k = pixels.shape[0], self.max_detections
        boxes = torch.zeros((n, k, 4), dtype=torch.float32)
        scores = torch.zeros((n, k), dtype=torch.float32)
        labels = torch.zeros((n, k), dtype=torch.int64)
        count = torch.zeros((n, 1), dtype=torch.int32)
        bright = (pixels > self.threshold).all(dim=1)  # (N, H, W)
        for i in range(n):
            ys, xs = torch.nonzero(bright[i], as_tuple=True)
            if ys.numel() > 0:
                # Pixel (x, y) covers [x, x+1): the box is in continuous coordinates.
                boxes[i, 0] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                scores[i, 0] = 1.0
                labels[i, 0] = 1
                count[i, 0] = 1
        return boxes, scores, labels, count


class DepthNet(nn.Module):
    """A small MiDaS-like encoder–decoder (torchvision has no depth model): ResNet-18 encoder,
    upsampling decoder with skip connections → one relative (inverse) depth map (N, 1, H, W) ≥ 0."""

    def __init__(self) -> None:
        super().__init__()
        trunk = tvm.resnet18(weights=None)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.layers = nn.ModuleList([trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4])
        channels = (64, 128, 256, 512)
        self.lateral = nn.ModuleList(nn.Conv2d(c, 64, 1) for c in channels)
        self.refine = nn.ModuleList(
            nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True)) for _ in channels
        )
        self.head = nn.Sequential(
            nn.Conv2d(64, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 1),
            nn.Softplus(),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = []
        x = self.stem(pixels)
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        y = self.lateral[3](features[3])
        y = self.refine[3](y)
        for i in (2, 1, 0):
            y = F.interpolate(y, size=features[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.refine[i](y + self.lateral[i](features[i]))
        y = F.interpolate(y, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(y)


class EmbeddingNet(nn.Module):
    """Identification network for crops: ResNet-18 trunk → 128-d L2-normalised embedding."""

    def __init__(self, dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        trunk = tvm.resnet18(weights=None)
        trunk.fc = nn.Linear(trunk.fc.in_features, dim)
        self.trunk = trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.trunk(pixels), dim=1)


# --- building an architecture -----------------------------------------------------------------


def _resolve(ref: str) -> Any:
    """The object a ``"module:name"`` reference names, importing its module."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _constructor(spec: Architecture) -> Callable[..., nn.Module]:
    if spec.constructor is None:
        raise ValueError(f"{spec.name}: the {spec.builder!r} builder needs a constructor")
    return _resolve(spec.constructor)


def _classifier(spec: Architecture, num_classes: int) -> nn.Module:
    return _constructor(spec)(weights=None, num_classes=num_classes)


def _segmenter(spec: Architecture, num_classes: int) -> nn.Module:
    return SegmentationNet(
        _constructor(spec)(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
        )
    )


def _detector(spec: Architecture, num_classes: int) -> nn.Module:
    return DetectionNet(
        _constructor(spec)(weights=None, weights_backbone=None, num_classes=num_classes),
        spec.input_size,
        MAX_DETECTIONS,
    )


# `Architecture.builder` → (architecture, num_classes) → random-init network.
BUILDERS: dict[Builder, Callable[[Architecture, int], nn.Module]] = {
    "classifier": _classifier,
    "segmenter": _segmenter,
    "detector": _detector,
    "bright_region": lambda spec, num_classes: BrightRegionDetector(),
    "depth": lambda spec, num_classes: DepthNet(),
    "embedding": lambda spec, num_classes: EmbeddingNet(),
}


def network(spec: Architecture, num_classes: int | None = None) -> nn.Module:
    """A random-init network of ``spec`` (seed torch first for a reproducible one)."""
    return BUILDERS[spec.builder](spec, num_classes or spec.num_classes)


def weights_enum(spec: Architecture) -> Any:
    """The architecture's torchvision weights enum, or None where it has none."""
    return None if spec.weights is None else _resolve(spec.weights)


def build_model(
    arch: str,
    seed: int = 0,
    weights: str | Path | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """The eval-mode serving module of ``arch``; the same arguments give the same model in any
    process. ``weights``: None (seeded random), a state-dict path, or ``"DEFAULT"``."""
    spec = architecture(arch)
    torch.manual_seed(seed)
    model = network(spec, num_classes)
    if weights == "DEFAULT":
        if spec.weights is None:
            raise ValueError(f"{arch} has no pretrained torchvision weights")
        _load_pretrained(model, spec)
    elif weights:
        model.load_state_dict(torch.load(Path(weights), map_location="cpu", weights_only=True))
    return model.eval()


def _load_pretrained(model: nn.Module, spec: Architecture) -> None:
    state = weights_enum(spec).DEFAULT.get_state_dict(progress=False)
    target = model.model if isinstance(model, SegmentationNet | DetectionNet) else model
    target.load_state_dict(state, strict=False)


def build_dnn(params: DnnParams) -> nn.Module:
    """The serving module a DNN stage's parameters describe (see `build_model`)."""
    return build_model(params.arch, params.seed, params.weights, params.num_classes)


def class_names(arch: str, num_classes: int | None = None) -> list[str]:
    """Human-readable class names (torchvision's where it has them, ``class_<i>`` otherwise)."""
    spec = architecture(arch)
    n = num_classes or spec.num_classes
    enum = weights_enum(spec)
    if enum is not None:
        names = list(enum.DEFAULT.meta.get("categories", []))
        if len(names) == n:
            return names
    return [f"class_{i}" for i in range(n)]
