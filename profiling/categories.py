"""The profiler's categories: where each span of a request's time is attributed, declared once
with the short header of the terminal table and the colour of the plots."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import TO_DEVICE, TO_HOST


@dataclass(frozen=True)
class Category:
    name: str
    header: str  # terminal table column
    colour: str  # plots


_CATEGORIES: tuple[Category, ...] = (
    Category("preprocessing", "pre", "#4c72b0"),
    Category("data_movement", "move", "#dd8452"),
    Category("queueing", "queue", "#c44e52"),
    Category("inference", "infer", "#55a868"),
    Category("postprocessing", "post", "#8172b3"),
    Category("other", "other", "#999999"),
)
CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATEGORIES)
HEADERS: dict[str, str] = {c.name: c.header for c in _CATEGORIES}
COLOURS: dict[str, str] = {c.name: c.colour for c in _CATEGORIES}
OTHER = "other"

# The span kind of what a model's reported work leaves of its compute (`tritontrace.split_compute`).
HANDOFF = "handoff"
# The role key of a model serving several stages (`models.fusion`): its compute is split by the
# parts it reports; unsplit, it stays with inference.
FUSED = "fused"
# Where the time of a stage's compute goes, by the stage's role in its `PipelineSpec`.
ROLE_CATEGORY: dict[str, str] = {
    "preprocess": "preprocessing",
    "inference": "inference",
    "postprocess": "postprocessing",
    FUSED: "inference",
}
# Where every span kind other than a stage's compute goes.
SPAN_CATEGORY: dict[str, str] = {
    "read": "data_movement",  # the client reads the encoded image
    "decode": "preprocessing",  # decode / resize_crop / normalize: in the client (client-cpu)
    "resize_crop": "preprocessing",  # or inside the preprocess model when it reports them
    "normalize": "preprocessing",
    "serialize": "data_movement",  # request tensors (or a Kafka record) built
    "send": "data_movement",  # client call until Triton starts the request
    "receive": "data_movement",  # Triton's response complete until the client has it
    "deserialize": "data_movement",  # response tensors read back
    "queue": "queueing",  # Triton: QUEUE_START → COMPUTE_START (dynamic batcher included)
    "compute_input": "data_movement",  # Triton: input copies, host↔device
    "compute_output": "data_movement",
    "broker_transit": "data_movement",  # Kafka produce → consume
    "consumer_wait": "queueing",  # consumed → handed to the worker's Triton call
    "worker": "data_movement",  # a stage worker's own time around its Triton call
    "overhead": "other",  # request handling, ensemble hand-offs, unmeasured gaps
    # A stage's own work, or a fused model's parts (`pipelines.variants.with_stage_times`), nested
    # in its compute: the category of their role; the rest of that compute is the hand-off.
    **ROLE_CATEGORY,
    # Inside a python-backend model's compute but outside its adapter's work: inputs into the
    # stub's shared memory, its wake-up, the answers back to Triton.
    HANDOFF: "data_movement",
    # Copies a stage reports making itself (on a GPU: CUDA events around them).
    TO_DEVICE: "data_movement",
    TO_HOST: "data_movement",
}


def model_roles(specs: Iterable[PipelineSpec]) -> dict[str, str]:
    """Model name → the role its compute is attributed by: its stage's, or `FUSED`."""
    return {s.name: FUSED if s.fused else s.role for spec in specs for s in spec.stages}
