"""Which Triton ensembles a pipeline's messages pass through over Kafka, and what each emits.

A `Route` is the broker's view of a pipeline: an ordered list of `BrokerStage`s, each one Triton
ensemble served by a group of stage workers. A pipeline served as one ensemble (``classify``) has
one stage named like it; a multi-DNN pipeline lists one stage per ensemble and lets a stage fan
out (one detection → N crops addressed to the next stage).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from cvserve.broker.crops import crop_emitter
from cvserve.broker.schema import MAX_CROPS, Emit, Message, result_message


def emit_result(message: Message, outputs: Mapping[str, np.ndarray], stage: str) -> list[Message]:
    """One result per input: the ensemble's outputs (the last stage of a route)."""
    return [result_message(message, stage, outputs)]


@dataclass(frozen=True)
class BrokerStage:
    """A stage between two topics: consumes ``name``'s topic, calls ``ensemble`` on Triton."""

    name: str
    ensemble: str
    emit: Emit = emit_result


@dataclass(frozen=True)
class Route:
    """The broker stages of pipeline ``pipeline``, in the order messages flow."""

    pipeline: str
    stages: tuple[BrokerStage, ...]

    def stage(self, name: str) -> BrokerStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(
            f"pipeline {self.pipeline} has no broker stage {name!r}; "
            f"stages: {[s.name for s in self.stages]}"
        )

    @property
    def first(self) -> BrokerStage:
        return self.stages[0]

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def single_ensemble(pipeline: str) -> Route:
    """A pipeline served as one Triton ensemble of the same name."""
    return Route(pipeline, (BrokerStage(pipeline, pipeline),))


def _detect_identify() -> Route:
    """Detector on full images → one JPEG crop per detection → identification on crops.

    The detector's score threshold and maximum detections (the pipeline spec of ``detect``)
    decide the crops: the emitter cuts every detection the ensemble returns.
    """
    everything = MAX_CROPS  # the detect pipeline's max_detections already caps the crops

    return Route(
        "detect_identify",
        (
            BrokerStage(
                "detect",
                "detect",
                crop_emitter("identify", score_threshold=0.0, max_crops=everything),
            ),
            BrokerStage("identify", "identify"),
        ),
    )


# Pipelines whose route is more than one ensemble.
MULTI_STAGE_ROUTES: dict[str, Callable[[], Route]] = {"detect_identify": _detect_identify}


def route(pipeline: str) -> Route:
    """The route of ``pipeline``: a registered multi-stage one, else its single ensemble."""
    factory = MULTI_STAGE_ROUTES.get(pipeline)
    return factory() if factory else single_ensemble(pipeline)
