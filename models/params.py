"""Typed parameters of the DNN and postprocess stages (`pipelines.spec.StageParams`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cvserve.pipelines.spec import Device, StageParams
from cvserve.preprocess.spec import PreprocessParams

ModelFormat = Literal["onnx", "torchscript"]
# What runs a DNN stage's network on the CPU (`models.runners`): torch eager (NCHW or
# channels-last), onnxruntime, OpenVINO; on the NGC target the same names pick Triton's
# libtorch, onnxruntime and openvino backends, and ``tensorrt`` ONNX through TensorRT (GPU
# only: on the CPU it falls back). None: chosen by measurement (`models.engine_choice`).
Engine = Literal["torch", "torch_channels_last", "onnxruntime", "openvino", "tensorrt"]
ENGINES: tuple[str, ...] = ("torch", "torch_channels_last", "onnxruntime", "openvino")
TARGET_ENGINES: tuple[str, ...] = (*ENGINES, "tensorrt")
# The engines a model of each kind runs on (an architecture is exported for the ONNX ones).
ENGINES_FOR: dict[str, tuple[str, ...]] = {
    "arch": TARGET_ENGINES,
    "onnx": ("onnxruntime", "openvino", "tensorrt"),
    "torchscript": ("torch", "torch_channels_last"),
}
# Reduced precision only where the pipeline allows it: bf16 on the CPU through OpenVINO (where
# the CPU has it), fp16 or bf16 on a GPU through torch; fp32 elsewhere (`models.runners`).
Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
# The engines that run each reduced precision (None: chosen by measurement).
PRECISION_ENGINES: dict[str, tuple[str | None, ...]] = {
    "fp16": (None, "torch", "torch_channels_last"),
    "bf16": (None, "openvino", "torch", "torch_channels_last"),
}


def precision_refused(precision: str | None, engine: str | None, device: str) -> str | None:
    """Why ``precision`` cannot run with ``engine`` (None: chosen) on ``device`` (None: it can):
    fp16 runs on a GPU only, bf16 on the CPU through OpenVINO, reduced precision on a GPU
    through torch."""
    if precision in (None, "fp32"):
        return None
    if device == "gpu":
        if engine not in (None, "torch", "torch_channels_last"):
            return f"{precision} on a GPU runs on torch (engine torch or torch_channels_last)"
        return None
    if precision == "fp16":
        return "fp16 runs on a GPU (serving.device: gpu); on the CPU allow bf16 (openvino)"
    if engine not in (None, "openvino"):
        return f"{precision} (reduced precision) on the CPU needs engine: openvino"
    return None


@dataclass(frozen=True)
class DnnParams(StageParams):
    """The network a DNN stage runs: a `models.zoo` architecture (``arch``: classes — None: the
    architecture's —, seed of the random weights or a state-dict file ``weights``), or a model
    file of ``model_format`` at ``model_file`` (an absolute path, read as is). ``torch_threads``
    are the intra-op threads per instance (the engine's). ``engine`` runs it (None: the model's
    own); ``precision`` ``bf16`` is allowed reduced precision (OpenVINO only)."""

    arch: str | None = None
    num_classes: int | None = None
    seed: int = 0
    weights: str | None = None
    torch_threads: int = 1
    model_file: str | None = None
    model_format: ModelFormat | None = None
    engine: Engine | None = None
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.model_file is None):
            raise ValueError("a DNN is an arch or a model_file, exactly one of them")
        if self.model_file is not None and self.model_format is None:
            raise ValueError(f"{self.model_file}: model_format (onnx, torchscript) is needed")
        if self.engine not in (None, *TARGET_ENGINES):
            raise ValueError(f"engine {self.engine!r}: choose from {', '.join(TARGET_ENGINES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: choose from {', '.join(PRECISIONS)}")
        allowed = ENGINES_FOR[self.model_format or "arch"]
        if self.engine is not None and self.engine not in allowed:
            what = {"torchscript": "a TorchScript model", "onnx": "an ONNX model"}
            raise ValueError(
                f"{what[str(self.model_format)]} runs on {', '.join(allowed)}, not {self.engine}"
            )
        engines = PRECISION_ENGINES.get(self.precision)
        if engines is not None and self.engine not in engines:
            named = ", ".join(e for e in engines if e)
            raise ValueError(
                f"{self.precision} needs engine {named} (or none: chosen by measurement)"
            )

    @property
    def own_engine(self) -> str:
        """The model's own engine: onnxruntime for an ONNX file, torch otherwise."""
        return "onnxruntime" if self.model_format == "onnx" else "torch"

    @property
    def chosen_engine(self) -> str:
        """The engine named, else the model's own (a stage with none chooses by measurement at
        load: `models.engine_choice`)."""
        return self.engine or self.own_engine

    @property
    def label(self) -> str:
        """What the network is, in a word: the architecture or the model file's name."""
        return self.arch or Path(str(self.model_file)).name


# What a user postprocess function is given: NumPy arrays on the host, or torch tensors where
# they are (on the GPU of a GPU server).
PostprocessTensors = Literal["numpy", "torch"]
POSTPROCESS_TENSORS: tuple[str, ...] = ("numpy", "torch")


@dataclass(frozen=True)
class PostprocessParams(StageParams):
    """A postprocess function and its keyword options: a `models.postprocess_functions.FUNCTIONS`
    name (called with the stage's inputs in order, torch tensors), or a user function
    ``"module:function"`` (called with a dict of the inputs, returning a dict of the outputs;
    the inputs as ``tensors``: NumPy arrays or torch tensors), imported with ``path`` (a folder)
    first on ``sys.path``. ``labels``: class names, for clients to print."""

    function: str
    keywords: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    labels: tuple[str, ...] | None = None
    tensors: PostprocessTensors = "numpy"

    def __post_init__(self) -> None:
        if self.tensors not in POSTPROCESS_TENSORS:
            choices = ", ".join(POSTPROCESS_TENSORS)
            raise ValueError(f"postprocess tensors {self.tensors!r}: choose from {choices}")

    @property
    def user_function(self) -> bool:
        return ":" in self.function

    def options(self) -> dict[str, Any]:
        """The function's keyword arguments (those set, not None)."""
        return {name: value for name, value in self.keywords.items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessParams:
        labels = data.get("labels")
        return cls(**{**data, "labels": None if labels is None else tuple(labels)})


@dataclass(frozen=True)
class TritonModelParams(StageParams):
    """A stage served by a model the user already has: folder ``model`` of the Triton repository
    ``repository``, with its own ``config.pbtxt`` and backend. cvserve writes no adapter for it;
    the repository writers copy the folder as it is."""

    repository: str
    model: str


@dataclass(frozen=True)
class FusedParams(StageParams):
    """A pipeline's stages served as one python-backend model (`models.fusion`): ``preprocess``
    feeds ``dnn`` (outputs ``dnn_outputs``, in order) and, when there is one, ``postprocess``
    (called with ``postprocess_inputs``: DNN outputs and META) inside the same process, so no
    tensor crosses Triton between them."""

    preprocess: PreprocessParams
    dnn: DnnParams
    dnn_outputs: tuple[str, ...]
    postprocess: PostprocessParams | None = None
    postprocess_inputs: tuple[str, ...] = ()

    def on_device(self, device: Device) -> FusedParams:
        return replace(self, preprocess=self.preprocess.on_device(device))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusedParams:
        post = data.get("postprocess")
        return cls(
            PreprocessParams.from_dict(data["preprocess"]),
            DnnParams(**data["dnn"]),
            tuple(data["dnn_outputs"]),
            None if post is None else PostprocessParams.from_dict(post),
            tuple(data.get("postprocess_inputs", ())),
        )
