"""The pipelines cvserve ships, each a pipeline file (`pipelines/files/*.yaml`), and the one way
every command turns a name or a file into specs.

`pipeline(name, **options)` and `pipeline_specs(name, **options)` read a shipped file;
`file_specs(path, **options)` reads a user's. Options are the command line's (`PIPELINE_OPTIONS`,
`builders.image_pipeline`'s keywords); None leaves the file's value.
"""

from __future__ import annotations

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


# Multi-DNN pipelines: several ensembles joined through Kafka (`broker.routes` reads them).
COMPOSITES: dict[str, CompositeSpec] = {
    name: composite_of(f) for name, f in _SHIPPED.items() if isinstance(f, CompositeFile)
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


def pipeline_specs(name: str, **options: Any) -> list[PipelineSpec]:
    """The ensembles serving shipped pipeline ``name``: one for a single pipeline, several for a
    composite (where ``arch`` names the first stage's DNN)."""
    if name not in _SHIPPED:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(_SHIPPED)}")
    return specs_of(_SHIPPED[name], **options)[1]


def pipeline(name: str, **options: Any) -> PipelineSpec:
    """The spec of shipped pipeline ``name``; options that are None are left at the file's."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}")
    return specs_of(_SHIPPED[name], **options)[1][0]
