"""The one way a postprocess stage's function is called, inside Triton or not.

``Postprocessor(params, input_names, output_names)(tensors)`` takes the stage's inputs by name
(NumPy arrays, batch first) and returns its outputs by name. A built-in function
(`models.postprocess.FUNCTIONS`) gets the inputs positionally in ``input_names`` order and the
params' options as keywords, and returns a tuple in ``output_names`` order. A user function
``"module:function"`` gets the dict of inputs (and the options as keywords) and returns a dict;
every declared output must be in it, with the declared dtype (cast when safe) — so a user's
function is testable with plain NumPy, and its mistakes are named.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cvserve.models.params import PostprocessParams
from cvserve.models.postprocess import FUNCTIONS
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


def checked_outputs(
    reference: str, returned: object, outputs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """The declared ``outputs`` out of a user function's return value, or a `UserFunctionError`
    naming what is wrong (not a dict, a missing output, a dtype or rank that differs)."""
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
        value = np.asarray(returned[tensor.name])
        if value.ndim != len(tensor.dims) + 1:
            raise UserFunctionError(
                f"{reference}: output {tensor.name!r} has shape {value.shape}; declared "
                f"(batch, {', '.join(map(str, tensor.dims))})"
            )
        if value.dtype != tensor.numpy_dtype:
            if not np.can_cast(value.dtype, tensor.numpy_dtype, casting="same_kind"):
                raise UserFunctionError(
                    f"{reference}: output {tensor.name!r} is {value.dtype}, declared "
                    f"{tensor.dtype}"
                )
            value = value.astype(tensor.numpy_dtype)
        result[tensor.name] = np.ascontiguousarray(value)
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

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.params.user_function:
            inputs = {name: tensors[name] for name in self.input_names}
            returned = self.function(inputs, **self.options)
            return checked_outputs(self.params.function, returned, self.outputs)
        results = self.function(*(tensors[n] for n in self.input_names), **self.options)
        return {t.name: r for t, r in zip(self.outputs, results, strict=True)}
