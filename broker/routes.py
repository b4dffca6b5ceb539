"""Which Triton ensembles a pipeline's messages pass through over a broker, and what each emits.

A `Route` is the broker's view of a pipeline: an ordered list of `BrokerStage`s, each one Triton
ensemble served by a group of stage workers. A pipeline served as one ensemble (``classify``) has
one stage named like it; a multi-DNN pipeline lists one stage per ensemble and lets a stage fan
out (one detection → N crops addressed to the next stage). Routes are made by the app from a
pipeline name or file (`composite_route`, `single_ensemble`) and handed to the broker's classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cvserve.broker.crops import crop_emitter
from cvserve.broker.schema import MAX_CROPS, Emit, Message, result_message
from cvserve.pipelines.spec import CompositeSpec


def emit_result(message: Message, outputs: Mapping[str, np.ndarray], stage: str) -> list[Message]:
    """One result per input: the ensemble's outputs (the last stage of a route)."""
    return [result_message(message, stage, outputs)]


@dataclass(frozen=True)
class BrokerStage:
    """A stage between two topics: consumes ``name``'s topic, calls ``ensemble`` on Triton;
    ``workers`` processes by default, each sustaining ``rate`` records/s when measured."""

    name: str
    ensemble: str
    emit: Emit = emit_result
    workers: int = 1
    rate: float | None = None


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


def composite_route(composite: CompositeSpec) -> Route:
    """The broker stages of a composite: each stage's workers call its ensemble; a fan-out
    stage's crops go to the next stage."""
    stages = []
    for stage, following in zip(composite.stages, (*composite.stages[1:], None), strict=True):
        emit: Emit = emit_result
        if stage.fan_out is not None and following is not None:
            emit = crop_emitter(
                following.pipeline,
                score_threshold=stage.fan_out.score_threshold,
                max_crops=stage.fan_out.max_crops or MAX_CROPS,
            )
        stages.append(BrokerStage(stage.pipeline, stage.pipeline, emit, stage.workers, stage.rate))
    return Route(composite.name, tuple(stages))


def named_route(pipeline: str, composites: Mapping[str, CompositeSpec]) -> Route:
    """The route of ``pipeline``: its composite's stages if ``composites`` (the catalog's, which
    the caller reads) holds one by that name, else its single ensemble."""
    composite = composites.get(pipeline)
    return composite_route(composite) if composite is not None else single_ensemble(pipeline)


def as_route(pipeline: Route | str) -> Route:
    """``pipeline`` itself, or the route of the pipeline named ``pipeline`` served as one ensemble
    of that name. A composite is given as its `Route` (`composite_route`): the app resolves
    names and files to routes, broker/ never reads the catalog."""
    return pipeline if isinstance(pipeline, Route) else single_ensemble(pipeline)
