"""The pipelines cvserve ships, each a pipeline file (`pipelines/files/*.yaml`), and the one way
every command turns a name or a file into specs.

`pipeline(name, **options)` and `pipeline_specs(name, **options)` read a shipped file;
`file_specs(path, **options)` reads a user's. Options are the command line's (`PIPELINE_OPTIONS`,
`builders.image_pipeline`'s keywords); None leaves the file's value.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from cvserve.pipelines.builders import (
    TASKS,
    classify,
    depth,
    detect,
    identify,
    image_pipeline,
    preprocess_outputs,
    preprocess_spec_for,
    preprocess_stage,
    segment,
)
from cvserve.pipelines.from_file import build_spec, composite_of, composite_specs
from cvserve.pipelines.pipeline_file import (
    CompositeFile,
    PipelineFile,
    PipelineFileError,
    load_file,
    shipped_files,
)
from cvserve.pipelines.spec import CompositeSpec, PipelineSpec
from cvserve.pipelines.tuned import (
    stage_settings_key,
    stored_settings,
    stored_stage_settings,
    tuned_key,
)

__all__ = [
    "COMPOSITES",
    "PIPELINES",
    "PIPELINE_OPTIONS",
    "TASKS",
    "PipelineFileError",
    "classify",
    "composite_of",
    "depth",
    "detect",
    "file_specs",
    "identify",
    "image_pipeline",
    "pipeline",
    "pipeline_specs",
    "preprocess_outputs",
    "preprocess_spec_for",
    "preprocess_stage",
    "segment",
]

# The options every image pipeline takes (`image_pipeline`'s keywords): a CLI passes these through.
PIPELINE_OPTIONS: frozenset[str] = frozenset(inspect.signature(image_pipeline).parameters) - {
    "task"
}

_SHIPPED: dict[str, PipelineFile | CompositeFile] = {
    name: load_file(path) for name, path in shipped_files().items()
}
# Shipped single pipelines, by name → their file.
PIPELINES: dict[str, Path] = {
    name: shipped_files()[name] for name, f in _SHIPPED.items() if isinstance(f, PipelineFile)
}


def _shipped_composite(name: str, f: CompositeFile) -> CompositeSpec:
    """A shipped composite, with the workers and rates `cvserve tune` stored for it on this
    machine wherever its file sets none."""
    stored = stored_stage_settings(stage_settings_key(name))
    parts = tuple(
        dataclasses.replace(
            part,
            **{
                k: v
                for k, v in stored.get(part.pipeline.name, {}).items()
                if getattr(part, k) is None
            },
        )
        for part in f.parts
    )
    return composite_of(dataclasses.replace(f, parts=parts))


# Multi-DNN pipelines: several ensembles joined through Kafka (`broker.routes` reads them).
COMPOSITES: dict[str, CompositeSpec] = {
    name: _shipped_composite(name, f)
    for name, f in _SHIPPED.items()
    if isinstance(f, CompositeFile)
}


def _chosen(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in PIPELINE_OPTIONS and v is not None}


def specs_of(
    f: PipelineFile | CompositeFile, **options: Any
) -> tuple[CompositeSpec | None, list[PipelineSpec]]:
    """The composite (None for one pipeline) and the ensembles of a loaded file."""
    chosen = _chosen(options)
    if isinstance(f, CompositeFile):
        return composite_specs(f, **chosen)
    return None, [build_spec(f, **chosen)]


def file_specs(path: Path | str, **options: Any) -> tuple[CompositeSpec | None, list[PipelineSpec]]:
    """The composite (None for one pipeline) and ensembles of the pipeline file at ``path``;
    `PipelineFileError` when it cannot be served as written."""
    return specs_of(load_file(path), **options)


def shipped_tuned_key(name: str, /, **options: Any) -> str:
    """The `pipelines.tuned` key of shipped pipeline ``name`` with ``options``."""
    f = _SHIPPED[name]
    assert isinstance(f, PipelineFile), f"{name} is a composite"
    arch = options.get("arch") or f.model.arch
    classes = options.get("num_classes") or f.model.num_classes
    return tuned_key(name, arch, classes, options.get("device") or f.serving.device)


def _with_tuned(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` and, where neither they nor the file set a value, what `cvserve tune` stored
    for this pipeline on this machine."""
    f = _SHIPPED[name]
    if not isinstance(f, PipelineFile):
        return options
    stored = stored_settings(shipped_tuned_key(name, **options))
    unset = {
        k: v
        for k, v in stored.items()
        if options.get(k) is None and getattr(f.serving, k, None) is None
    }
    return {**options, **unset}


def pipeline_specs(name: str, /, **options: Any) -> list[PipelineSpec]:
    """The ensembles serving shipped pipeline ``name``: one for a single pipeline, several for a
    composite (where ``arch`` names the first stage's DNN); tuned settings applied (`pipeline`)."""
    if name not in _SHIPPED:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(_SHIPPED)}")
    return specs_of(_SHIPPED[name], **_with_tuned(name, options))[1]


def pipeline(name: str, /, **options: Any) -> PipelineSpec:
    """The spec of shipped pipeline ``name``; options that are None are left at the file's, or
    at what `cvserve tune --pipeline` stored for this machine (`pipelines.tuned`)."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}")
    return specs_of(_SHIPPED[name], **_with_tuned(name, options))[1][0]
