"""Typed parameters of the DNN and postprocess stages (`pipelines.spec.StageParams`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvserve.pipelines.spec import StageParams


@dataclass(frozen=True)
class DnnParams(StageParams):
    """A `models.zoo` network: architecture, classes (None: the architecture's), seed of the
    random weights or a weights file, and torch threads per instance."""

    arch: str
    num_classes: int | None = None
    seed: int = 0
    weights: str | None = None
    torch_threads: int = 1


@dataclass(frozen=True)
class PostprocessParams(StageParams):
    """A `models.postprocess.FUNCTIONS` entry and its keyword options (None: not passed)."""

    function: str
    k: int | None = None
    score_threshold: float | None = None
    max_detections: int | None = None

    def options(self) -> dict[str, Any]:
        """The function's keyword arguments."""
        keywords = {
            "k": self.k,
            "score_threshold": self.score_threshold,
            "max_detections": self.max_detections,
        }
        return {name: value for name, value in keywords.items() if value is not None}
