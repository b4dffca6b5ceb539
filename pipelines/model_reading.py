"""A pipeline file's model, read and checked against the preprocessing the file declares.

A model file (ONNX, TorchScript) or a model in the user's Triton repository is read
(`models.contract`; TorchScript is run once on the declared input): the input tensor's name,
dtype, layout and size must agree with the declared preprocessing (`preprocess_from`). A
disagreement is a `PipelineFileError` naming the file's field and the model's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvserve.models.contract import (
    ContractError,
    ModelContract,
    ModelTensor,
    read_onnx,
    read_torchscript,
)
from cvserve.models.repository.config import read_config
from cvserve.pipelines.builders import CROP_RATIO
from cvserve.pipelines.pipeline_file import InputDecl, PipelineFile
from cvserve.pipelines.spec import TensorSpec, dtype_from_triton
from cvserve.preprocess.spec import IMAGENET_MEAN, IMAGENET_STD, LETTERBOX_GREY, PreprocessSpec


def shape_text(tensor: ModelTensor) -> str:
    """``-1x3x224x224`` as ``?x3x224x224``."""
    return "x".join("?" if d < 0 else str(d) for d in tensor.shape)


@dataclass(frozen=True)
class ModelRead:
    """A model file's side of its pipeline: its tensors, the input the pixels feed, the
    preprocessing it gets, and its own max batch size (0: none imposed)."""

    contract: ModelContract
    input: ModelTensor
    pre: PreprocessSpec
    own_batch: int


def preprocess_from(
    decl: InputDecl, size: tuple[int, int], device: str, base: PreprocessSpec | None = None
) -> PreprocessSpec:
    """The `PreprocessSpec` an input declaration describes for a model input of ``size``
    (H, W); unset fields from ``base`` (an architecture's), else the defaults: shorter-side
    resize + centre crop, ImageNet mean/std, RGB, CHW, float32."""
    resize = decl.resize or (base.resize_mode if base else "shorter_crop")
    if decl.scale is not None:
        std = (1.0 / decl.scale,) * 3
        mean = decl.mean or (0.0, 0.0, 0.0)
    else:
        std = decl.std or (base.std if base else IMAGENET_STD)
        mean = decl.mean or (base.mean if base else IMAGENET_MEAN)
    shorter = decl.resize_shorter or (
        base.resize_shorter if base and base.crop == size else round(min(size) * CROP_RATIO)
    )
    return PreprocessSpec(
        resize_mode=resize,  # type: ignore[arg-type]
        resize_shorter=shorter,
        crop=size,
        mean=mean,
        std=std,
        antialias=decl.antialias,
        dtype=decl.dtype,  # type: ignore[arg-type]
        pad_value=decl.pad_value or LETTERBOX_GREY,
        layout=decl.layout,  # type: ignore[arg-type]
        channels=decl.channels,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        multiple_of=decl.multiple_of or 32,
    )


def _model_size(pf: PipelineFile, tensor: ModelTensor) -> tuple[int, int] | None:
    """(H, W) a 4-D image input fixes, or None where it leaves them dynamic."""
    dims = tensor.dims
    h, w = (dims[1], dims[2]) if pf.input.layout == "CHW" else (dims[0], dims[1])
    return (h, w) if h > 0 and w > 0 else None


def check_input(pf: PipelineFile, tensor: ModelTensor, pre: PreprocessSpec) -> None:
    """The model's input ``tensor`` takes what ``pre`` makes, or a `PipelineFileError`."""
    where = "input"
    if len(tensor.shape) != 4:
        raise pf.error(
            where,
            f"the model's input {tensor.name!r} is {shape_text(tensor)} ({len(tensor.shape)}-D); "
            "cvserve feeds images as a 4-D batch (N, 3, H, W) or (N, H, W, 3)",
        )
    if tensor.shape[0] > 0:
        raise pf.error(
            where,
            f"the model's input {tensor.name!r} has a fixed batch of {tensor.shape[0]} "
            f"({shape_text(tensor)}): export it with a dynamic batch axis so Triton can batch it",
        )
    if pre.dynamic and _model_size(pf, tensor) is not None:
        raise pf.error(
            "input.resize",
            f"dynamic gives each image its own size; the model's input {tensor.name!r} is "
            f"{shape_text(tensor)}: use a fixed size",
        )
    dims = zip(("dim 1", "dim 2", "dim 3"), tensor.dims, pre.output_shape, strict=True)
    for what, got, want in dims:
        if got > 0 and want > 0 and got != want:
            declared = f"layout {pre.layout}, size {list(pre.crop)}"
            raise pf.error(
                "input.layout" if 3 in (got, want) else "input.size",
                f"{declared} makes (N, {', '.join(map(str, pre.output_shape))}); the model's "
                f"input {tensor.name!r} is {shape_text(tensor)} ({what}: {got}, not {want})",
            )
    if tensor.dtype != pre.dtype:
        raise pf.error(
            "input.dtype",
            f"{pre.dtype} declared; the model's input {tensor.name!r} is {tensor.dtype}",
        )


def read_triton_model(pf: PipelineFile) -> tuple[ModelContract, int]:
    """Inputs, outputs and max batch size of the user's Triton model, from its config.pbtxt."""
    model = pf.model
    path = Path(str(model.repository)) / str(model.name) / "config.pbtxt"
    if not path.is_file():
        raise pf.error("model.triton", f"no {path}: the model's folder needs its config.pbtxt")
    config = read_config(path)
    batch = (-1,) if config.max_batch_size > 0 else ()

    def tensors(items: Any) -> tuple[ModelTensor, ...]:
        from tritonclient.grpc import model_config_pb2 as mc

        return tuple(
            ModelTensor(
                t.name,
                dtype_from_triton(mc.DataType.Name(t.data_type)),
                (*batch, *t.dims),
            )
            for t in items
        )

    return ModelContract(tensors(config.input), tensors(config.output)), config.max_batch_size


def _input_tensor(pf: PipelineFile, contract: ModelContract) -> ModelTensor:
    if pf.input.tensor is not None:
        for tensor in contract.inputs:
            if tensor.name == pf.input.tensor:
                return tensor
        names = ", ".join(repr(t.name) for t in contract.inputs)
        raise pf.error("input.tensor", f"the model has no input {pf.input.tensor!r} ({names})")
    if len(contract.inputs) != 1:
        names = ", ".join(repr(t.name) for t in contract.inputs)
        raise pf.error("input.tensor", f"the model has several inputs ({names}): name one")
    return contract.inputs[0]


def tensor_spec(pf: PipelineFile, tensor: ModelTensor) -> TensorSpec:
    try:
        return TensorSpec(tensor.name, tensor.dtype, tensor.dims)
    except ValueError as exc:
        raise pf.error("model", f"output {tensor.name!r}: {exc}") from exc


def read_model(pf: PipelineFile, device: str) -> ModelRead:
    """The model of ``pf`` (not an ``arch``) read, and checked against the declared
    preprocessing on ``device``."""
    model = pf.model
    own_batch = 0
    try:
        if model.kind == "onnx":
            contract = read_onnx(Path(str(model.path)))
        elif model.kind == "triton":
            contract, own_batch = read_triton_model(pf)
        else:
            contract = None
    except ContractError as exc:
        raise pf.error(f"model.{model.kind}", str(exc)) from exc
    if contract is not None:
        tensor = _input_tensor(pf, contract)
        if len(tensor.shape) != 4:
            check_input(pf, tensor, preprocess_from(pf.input, (1, 1), device))
        size = pf.input.size or _model_size(pf, tensor)
        if size is None:
            raise pf.error(
                "input.size",
                f"needed: the model's input {tensor.name!r} is {shape_text(tensor)} (dynamic)",
            )
        pre = preprocess_from(pf.input, size, device)
        check_input(pf, tensor, pre)
        return ModelRead(contract, tensor, pre, own_batch)
    # TorchScript: run it once on the declared input to see what it returns.
    if pf.input.size is None:
        raise pf.error("input.size", "needed for a TorchScript model ([height, width])")
    pre = preprocess_from(pf.input, pf.input.size, device)
    m = pre.multiple_of
    example_size = tuple((s + m - 1) // m * m for s in pre.crop) if pre.dynamic else pre.crop
    example_shape = (3, *example_size) if pre.layout == "CHW" else (*example_size, 3)
    example = np.zeros((2, *example_shape), pre.dtype)
    try:
        contract = read_torchscript(Path(str(model.path)), example, pf.input.tensor or "INPUT__0")
    except ContractError as exc:
        raise pf.error("model.torchscript", str(exc)) from exc
    return ModelRead(contract, contract.inputs[0], pre, own_batch)
