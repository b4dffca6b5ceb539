"""Every DNN cvserve serves, declared once: its task, the input it expects and how it is built.

Declarations only — importing this module does not import torch or torchvision, so the pipeline
catalog and the ``cvserve`` command can read an architecture's input size, resize mode and
normalisation (which the catalog turns into the preprocessing spec) without paying for them.
The networks themselves are built by `cvserve.models.zoo`: each `Architecture` names its
builder (a `cvserve.models.zoo.BUILDERS` key) and, for torchvision models, the constructor and
weights enum as ``"module:name"`` strings that the zoo imports on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cvserve.preprocess.spec import IMAGENET_MEAN, IMAGENET_STD, ResizeMode

Task = Literal["classification", "segmentation", "detection", "depth", "identification"]
# How `cvserve.models.zoo` makes the network: wrap a torchvision ``constructor`` as a classifier,
# segmenter or detector, or build one of cvserve's own modules.
Builder = Literal["classifier", "segmenter", "detector", "bright_region", "depth", "embedding"]

# SSDlite normalises to [-1, 1].
HALF_MEAN: tuple[float, float, float] = (127.5, 127.5, 127.5)
HALF_STD: tuple[float, float, float] = (127.5, 127.5, 127.5)
EMBEDDING_DIM = 128
MAX_DETECTIONS = 100

_TVM = "torchvision.models"
_TVS = "torchvision.models.segmentation"
_TVD = "torchvision.models.detection"


@dataclass(frozen=True)
class Architecture:
    """A servable DNN and the input it expects (0..255 pixel units for mean/std)."""

    name: str
    task: Task
    input_size: tuple[int, int]  # (H, W) after preprocessing
    resize_mode: ResizeMode
    num_classes: int
    builder: Builder  # how models.zoo builds the random-init network for num_classes
    constructor: str | None = None  # torchvision "module:function" the builder wraps
    weights: str | None = None  # torchvision weights enum "module:Name": "DEFAULT", class names
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""
    # Multiply-adds per image at ``input_size``, in billions (what torchvision's model tables call
    # GFLOPS); tests/models checks each against the built network. Serving defaults use it.
    gmacs: float | None = None


_ARCHS = (
    Architecture(
        "resnet50",
        "classification",
        (224, 224),
        "shorter_crop",
        1000,
        "classifier",
        f"{_TVM}:resnet50",
        f"{_TVM}:ResNet50_Weights",
        gmacs=4.09,
    ),
    Architecture(
        "resnet18",
        "classification",
        (224, 224),
        "shorter_crop",
        1000,
        "classifier",
        f"{_TVM}:resnet18",
        f"{_TVM}:ResNet18_Weights",
        gmacs=1.81,
    ),
    Architecture(
        "mobilenet_v3_large",
        "classification",
        (224, 224),
        "shorter_crop",
        1000,
        "classifier",
        f"{_TVM}:mobilenet_v3_large",
        f"{_TVM}:MobileNet_V3_Large_Weights",
        gmacs=0.22,
    ),
    Architecture(
        "mobilenet_v3_small",
        "classification",
        (224, 224),
        "shorter_crop",
        1000,
        "classifier",
        f"{_TVM}:mobilenet_v3_small",
        f"{_TVM}:MobileNet_V3_Small_Weights",
        gmacs=0.06,
    ),
    Architecture(
        "deeplabv3_mobilenet_v3_large",
        "segmentation",
        (520, 520),
        "fixed",
        21,
        "segmenter",
        f"{_TVS}:deeplabv3_mobilenet_v3_large",
        f"{_TVS}:DeepLabV3_MobileNet_V3_Large_Weights",
        gmacs=10.44,
    ),
    Architecture(
        "fcn_resnet50",
        "segmentation",
        (520, 520),
        "fixed",
        21,
        "segmenter",
        f"{_TVS}:fcn_resnet50",
        f"{_TVS}:FCN_ResNet50_Weights",
        gmacs=142.73,
    ),
    Architecture(
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "detection",
        (320, 320),
        "letterbox",
        91,
        "detector",
        f"{_TVD}:fasterrcnn_mobilenet_v3_large_320_fpn",
        f"{_TVD}:FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
        # Trained weights (torchvision's figure); random ones keep more proposals.
        gmacs=0.72,
    ),
    Architecture(
        "ssdlite320_mobilenet_v3_large",
        "detection",
        (320, 320),
        "letterbox",
        91,
        "detector",
        f"{_TVD}:ssdlite320_mobilenet_v3_large",
        f"{_TVD}:SSDLite320_MobileNet_V3_Large_Weights",
        mean=HALF_MEAN,
        std=HALF_STD,
        gmacs=0.58,
    ),
    Architecture(
        "retinanet_resnet50_fpn",
        "detection",
        (640, 640),
        "letterbox",
        91,
        "detector",
        f"{_TVD}:retinanet_resnet50_fpn",
        f"{_TVD}:RetinaNet_ResNet50_FPN_Weights",
        gmacs=96.88,
    ),
    Architecture(
        "bright_region",
        "detection",
        (320, 320),
        "letterbox",
        2,
        "bright_region",
        description="fixed-head detector for checking box mapping (not learned)",
        gmacs=0.0,
    ),
    Architecture(
        "depth_resnet18",
        "depth",
        (256, 256),
        "fixed",
        1,
        "depth",
        description="small MiDaS-like encoder–decoder built by cvserve",
        gmacs=3.81,
    ),
    Architecture(
        "embed_resnet18",
        "identification",
        (256, 128),
        "fixed",
        EMBEDDING_DIM,
        "embedding",
        description="ResNet-18 → 128-d L2-normalised",
        gmacs=1.18,
    ),
)
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in _ARCHS}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]
