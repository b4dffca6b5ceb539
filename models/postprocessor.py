"""The one way a postprocess stage's function is called, inside Triton or not.

``Postprocessor(params, input_names, output_names)(tensors)`` takes the stage's inputs by name
(torch tensors, batch first, on any device; NumPy arrays are taken as CPU tensors) and returns
its outputs by name, torch tensors on the device of the first input (``META`` may come from the
CPU while the network's outputs are on a GPU). A built-in function
(`models.postprocess_functions.FUNCTIONS`) gets the inputs positionally in ``input_names`` order
and the params' options as keywords, and returns a tuple in ``output_names`` order. A user function
``"module:function"`` gets the dict of inputs (and the options as keywords) and returns a dict:
the inputs as NumPy arrays on the host, or, when its params ask for ``tensors: torch``, as torch
tensors on the first input's device; it may return either. Every declared output must be in it,
with the declared dtype (cast when safe) — so a user's function is testable with plain NumPy,
and its mistakes are named.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cvserve.models.params import PostprocessParams
from cvserve.models.postprocess_functions import FUNCTIONS
from cvserve.pipelines.spec import TensorSpec


class UserFunctionError(RuntimeError):
    """A user postprocess function that cannot be imported or returned the wrong thing."""


def import_function(reference: str, path: str | None = None) -> Callable[..., Any]:
    """The callable ``"module:function"`` names, with ``path`` first on ``sys.path``."""
    module_name, _, name = reference.partition(":")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        where = f" (looked in {path} first)" if path else ""
        raise UserFunctionError(f"cannot import {reference}{where}: {exc}") from exc
    if not callable(function):
        raise UserFunctionError(f"{reference} is not a function")
    return function


def as_tensor(value: Any) -> torch.Tensor:
    """A torch tensor as it is; anything else (a NumPy array, a list) as a CPU tensor, sharing
    the array's memory unless it is read-only."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    if dtype == torch.bfloat16:  # no NumPy twin; it casts as a float does
        return np.dtype(np.float32)
    return torch.empty(0, dtype=dtype).numpy().dtype


def _torch_dtype(dtype: np.dtype[Any]) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def checked_outputs(
    reference: str,
    returned: object,
    outputs: Sequence[TensorSpec],
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The declared ``outputs`` out of a user function's return value (NumPy arrays or torch
    tensors), as contiguous torch tensors of the declared dtypes on ``device``, or a
    `UserFunctionError` naming what is wrong (not a dict, a missing output, a dtype or rank that
    differs)."""
    if not isinstance(returned, Mapping):
        raise UserFunctionError(
            f"{reference} returned {type(returned).__name__}, not a dict of arrays"
        )
    result = {}
    for tensor in outputs:
        if tensor.name not in returned:
            raise UserFunctionError(
                f"{reference} returned no {tensor.name!r} (it returned {sorted(returned)})"
            )
        value = returned[tensor.name]
        if not isinstance(value, torch.Tensor):
            value = np.asarray(value)
        dtype = _numpy_dtype(value.dtype) if isinstance(value, torch.Tensor) else value.dtype
        if value.ndim != len(tensor.dims) + 1:
            raise UserFunctionError(
                f"{reference}: output {tensor.name!r} has shape {tuple(value.shape)}; declared "
                f"(batch, {', '.join(map(str, tensor.dims))})"
            )
        if dtype != tensor.numpy_dtype and not np.can_cast(
            dtype, tensor.numpy_dtype, casting="same_kind"
        ):
            shown = str(value.dtype).removeprefix("torch.")
            raise UserFunctionError(
                f"{reference}: output {tensor.name!r} is {shown}, declared {tensor.dtype}"
            )
        wanted = _torch_dtype(tensor.numpy_dtype)
        result[tensor.name] = as_tensor(value).to(device=device, dtype=wanted).contiguous()
    return result


class Postprocessor:
    """A postprocess stage's function, called on tensors by name (see the module docstring)."""

    def __init__(
        self,
        params: PostprocessParams,
        input_names: Sequence[str],
        outputs: Sequence[TensorSpec],
    ) -> None:
        self.params = params
        self.input_names = list(input_names)
        self.outputs = list(outputs)
        self.options = params.options()
        if params.user_function:
            self.function = import_function(params.function, params.path)
        else:
            self.function = FUNCTIONS[params.function]

    @property
    def batchable(self) -> bool:
        """Whether several requests can be postprocessed in one call and their answers cut apart
        by row: a built-in function (each row on its own) whose outputs have fixed shapes (masks
        at the original size are padded to a batch's largest image: not these)."""
        return not self.params.user_function and all(-1 not in t.dims for t in self.outputs)

    def __call__(self, tensors: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        inputs = [as_tensor(tensors[name]) for name in self.input_names]
        device = inputs[0].device if inputs else torch.device("cpu")
        if not self.params.user_function:
            results = self.function(*inputs, **self.options)
            return {t.name: r for t, r in zip(self.outputs, results, strict=True)}
        if self.params.tensors == "torch":
            given: dict[str, Any] = {
                n: t.to(device) for n, t in zip(self.input_names, inputs, strict=True)
            }
        else:
            given = {n: t.numpy(force=True) for n, t in zip(self.input_names, inputs, strict=True)}
        returned = self.function(given, **self.options)
        return checked_outputs(self.params.function, returned, self.outputs, device)
