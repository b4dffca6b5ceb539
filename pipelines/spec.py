"""The one spec of a served pipeline: stages, tensors, shapes, batching, devices.

Triton configs (`models.repository.config`), clients, benchmarks and profiler labels are all
derived from a `PipelineSpec`; nothing here knows how a stage computes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

import numpy as np

# numpy dtype name -> Triton wire dtype ("FP32"); the config enum is "TYPE_" + it.
_TRITON_DTYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bytes": "BYTES",
}


def dtype_from_triton(wire: str) -> str:
    """The NumPy dtype name of a Triton dtype (``FP32``, ``TYPE_FP32``; ``STRING`` = bytes)."""
    wire = wire.removeprefix("TYPE_")
    wire = "BYTES" if wire == "STRING" else wire
    for name, triton in _TRITON_DTYPES.items():
        if triton == wire:
            return name
    raise ValueError(f"unsupported Triton dtype {wire!r}")


Role = Literal["preprocess", "inference", "postprocess"]
Device = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of a stage or pipeline. ``dims`` excludes the batch dimension; -1 = any."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    allow_ragged_batch: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _TRITON_DTYPES:
            raise ValueError(f"tensor {self.name}: unsupported dtype {self.dtype!r}")

    @property
    def triton_dtype(self) -> str:
        """Wire dtype as the client API spells it, e.g. ``FP32``."""
        return _TRITON_DTYPES[self.dtype]

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return np.dtype(object) if self.dtype == "bytes" else np.dtype(self.dtype)


@dataclass(frozen=True)
class BatchingSpec:
    """Triton dynamic batching of one model."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 2000


@dataclass(frozen=True)
class StageParams:
    """A stage's typed parameters: one frozen dataclass per role, a field per parameter.

    Serialised once into the stage's model config (`to_json`) and parsed once by its adapter
    (`from_json`); a subclass with nested specs overrides `from_dict`.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def on_device(self, device: Device) -> Self:
        """These params for the stage placed on ``device`` (unchanged unless they name one)."""
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))


P = TypeVar("P", bound=StageParams)


@dataclass(frozen=True)
class StageSpec:
    """One Triton model of a pipeline. Its ``name`` is the Triton model name and profiler label.

    ``adapter`` is the module holding its ``TritonPythonModel``; ``params`` (its role's
    `StageParams`) reach that adapter through the model config. ``fused``: the stages this one
    model serves together (`models.fusion`), kept so a view that needs them apart
    (`pipelines.variants.unfused`) gets them back as they were.
    """

    name: str
    role: Role
    adapter: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: StageParams = field(default_factory=StageParams)
    batching: BatchingSpec = field(default_factory=BatchingSpec)
    instances: int = 1
    device: Device = "cpu"
    fused: tuple[StageSpec, ...] = ()

    def params_as(self, kind: type[P]) -> P:
        """The stage's params, which must be a ``kind`` (a role's `StageParams`)."""
        if not isinstance(self.params, kind):
            raise TypeError(
                f"stage {self.name}: params are {type(self.params).__name__}, not {kind.__name__}"
            )
        return self.params


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline served as one Triton ensemble named ``name``.

    Tensors are wired by name: a stage input is fed by the pipeline input or the earlier stage
    output of the same name.
    """

    name: str
    stages: tuple[StageSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""

    def __post_init__(self) -> None:
        available = {t.name for t in self.inputs}
        for stage in self.stages:
            missing = [t.name for t in stage.inputs if t.name not in available]
            if missing:
                raise ValueError(
                    f"pipeline {self.name}: stage {stage.name} input(s) {missing} "
                    "are produced by no pipeline input or earlier stage"
                )
            available |= {t.name for t in stage.outputs}
        missing = [t.name for t in self.outputs if t.name not in available]
        if missing:
            raise ValueError(f"pipeline {self.name}: outputs {missing} are produced by no stage")

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"pipeline {self.name} has no stage {name!r}")

    def stage_by_role(self, role: Role) -> StageSpec:
        for stage in self.stages:
            if stage.role == role:
                return stage
        raise KeyError(f"pipeline {self.name} has no {role} stage")

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every Triton model of the pipeline, the ensemble last."""
        return (*(s.name for s in self.stages), self.name)

    def output(self, name: str) -> TensorSpec:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(f"pipeline {self.name} has no output {name!r}")


@dataclass(frozen=True)
class CropFanOut:
    """A stage whose detections each become one crop message for the next stage: boxes scoring
    at least ``score_threshold``, best first, at most ``max_crops`` (None: every detection the
    ensemble returns; its ``max_detections`` caps them)."""

    score_threshold: float = 0.0
    max_crops: int | None = None


@dataclass(frozen=True)
class CompositeStage:
    """One ensemble of a composite, served by its own group of Kafka stage workers: ``workers``
    processes by default, each sustaining ``rate`` records/s when measured (`cvserve tune`)."""

    pipeline: str
    fan_out: CropFanOut | None = None
    workers: int = 1
    rate: float | None = None


@dataclass(frozen=True)
class CompositeSpec:
    """A multi-DNN pipeline: ensembles joined through Kafka, in the order messages flow. Each
    stage but the last fans out to the next; the last one's outputs are the results."""

    name: str
    stages: tuple[CompositeStage, ...]

    def __post_init__(self) -> None:
        if len(self.stages) < 2:
            raise ValueError(f"composite {self.name}: needs two stages or more")
        if any(s.fan_out is None for s in self.stages[:-1]) or self.stages[-1].fan_out:
            raise ValueError(f"composite {self.name}: every stage but the last fans out")

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(s.pipeline for s in self.stages)
