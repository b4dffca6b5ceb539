"""Every preprocessing backend by name, built from a spec (imported only when asked for)."""

from __future__ import annotations

import importlib
from typing import Any

from cvserve.preprocess.preprocessor import Preprocessor
from cvserve.preprocess.spec import PreprocessSpec

# name → "module:class"; each follows `preprocess.preprocessor.Preprocessor`.
BACKENDS: dict[str, str] = {
    "dali": "cvserve.preprocess.dali:DaliPreprocessor",
    "opencv": "cvserve.preprocess.opencv:OpenCVPreprocessor",
    "opencv-reduced": "cvserve.preprocess.opencv:ReducedDecodeOpenCVPreprocessor",
    "torchvision": "cvserve.preprocess.torchvision_backend:TorchvisionPreprocessor",
    "reference": "cvserve.preprocess.reference:ReferencePreprocessor",
}


def backend_class(backend: str) -> type[Preprocessor]:
    """The class of backend ``backend`` (its module is imported now)."""
    if backend not in BACKENDS:
        raise KeyError(f"unknown preprocessing backend {backend!r}; choose from {sorted(BACKENDS)}")
    module, cls = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), cls)


def make_preprocessor(
    spec: PreprocessSpec,
    backend: str = "dali",
    max_batch_size: int = 32,
    threads: int = 1,
    **options: object,
) -> Preprocessor:
    """Backend ``backend`` running ``spec`` (on ``spec.device``) with ``threads`` CPU threads
    (DALI's ``num_threads``; a thread pool for the others)."""
    factory: Any = backend_class(backend)
    if backend == "dali":
        return factory(spec, max_batch_size, num_threads=threads, **options)
    return factory(spec, max_batch_size, threads=threads, **options)
