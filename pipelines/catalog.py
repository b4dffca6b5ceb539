"""The pipelines cvserve ships, each a pipeline file (`pipelines/files/*.yaml`), and the one way
every command turns a name or a file into specs.

`pipeline(name, **options)` and `pipeline_specs(name, **options)` read a shipped file;
`file_specs(path, **options)` reads a user's, `image_pipeline(task, arch, **options)` a task's
(`from_file.task_file`). Options are the command line's (`PIPELINE_OPTIONS`, each overriding a
file field: `from_file.with_options`); None leaves the file's value.

Each goes through `resolve`, the one step where a machine (`host.Host`: cores, tuned settings)
enters a spec; ``host`` None is `host.this_machine`, read when called. Importing this module
reads no machine: `COMPOSITES` are the files' composites, untuned.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cvserve.pipelines.builders import (
    TASKS,
    preprocess_outputs,
    preprocess_spec_for,
    preprocess_stage,
)
from cvserve.pipelines.from_file import (
    PIPELINE_OPTIONS,
    build_spec,
    composite_of,
    composite_specs,
    task_file,
)
from cvserve.pipelines.host import Host, this_machine
from cvserve.pipelines.pipeline_file import (
    CompositeFile,
    PipelineFile,
    PipelineFileError,
    load_file,
    shipped_files,
)
from cvserve.pipelines.spec import CompositeSpec, PipelineSpec
from cvserve.pipelines.tuned import stage_settings_key, tuned_key

__all__ = [
    "COMPOSITES",
    "PIPELINES",
    "PIPELINE_OPTIONS",
    "TASKS",
    "Host",
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
    "resolve",
    "segment",
    "shipped_composites",
]

_SHIPPED: dict[str, PipelineFile | CompositeFile] = {
    name: load_file(path) for name, path in shipped_files().items()
}
# Shipped single pipelines, by name → their file.
PIPELINES: dict[str, Path] = {
    name: shipped_files()[name] for name, f in _SHIPPED.items() if isinstance(f, PipelineFile)
}


def _tuned_composite(name: str, f: CompositeFile, host: Host) -> CompositeFile:
    """Shipped composite file ``f`` with the workers and rates `cvserve tune` stored for it on
    ``host`` wherever the file sets none."""
    stored = host.stage_tuned(stage_settings_key(name))
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
    return dataclasses.replace(f, parts=parts)


# Multi-DNN pipelines: several ensembles joined through Kafka (`broker.routes` reads them). As the
# files say: a command serves the tuned ones (`shipped_composites`, `resolve`).
COMPOSITES: dict[str, CompositeSpec] = {
    name: composite_of(f) for name, f in _SHIPPED.items() if isinstance(f, CompositeFile)
}


def shipped_composites(host: Host) -> dict[str, CompositeSpec]:
    """`COMPOSITES` with the workers and rates `cvserve tune` stored on ``host``."""
    return {
        name: composite_of(_tuned_composite(name, f, host))
        for name, f in _SHIPPED.items()
        if isinstance(f, CompositeFile)
    }


def shipped(name: str) -> PipelineFile | CompositeFile:
    """The loaded file of shipped pipeline ``name``; `KeyError` naming the choices."""
    if name not in _SHIPPED:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(_SHIPPED)}")
    return _SHIPPED[name]


def _chosen(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in PIPELINE_OPTIONS and v is not None}


def shipped_tuned_key(name: str, /, **options: Any) -> str:
    """The `pipelines.tuned` key of shipped pipeline ``name`` with ``options``."""
    f = _SHIPPED[name]
    assert isinstance(f, PipelineFile), f"{name} is a composite"
    arch = options.get("arch") or f.model.arch
    classes = options.get("num_classes") or f.model.num_classes
    return tuned_key(name, arch, classes, options.get("device") or f.serving.device)


def _with_tuned(name: str, f: PipelineFile, host: Host, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` and, where neither they nor the file set a value, what `cvserve tune` stored
    for shipped pipeline ``name`` on ``host``."""
    stored = host.tuned(shipped_tuned_key(name, **options))
    unset = {
        k: v
        for k, v in stored.items()
        if options.get(k) is None and getattr(f.serving, k, None) is None
    }
    return {**options, **unset}


def resolve(
    f: PipelineFile | CompositeFile, host: Host, *, shipped_as: str | None = None, **options: Any
) -> tuple[CompositeSpec | None, list[PipelineSpec]]:
    """The composite (None for one pipeline) and the ensembles of loaded file ``f`` served on
    ``host``: the one step where a machine enters a spec. ``options`` (the command line's) win,
    then the file's ``serving:``; a shipped file (``shipped_as``: its catalog name) then takes
    what `cvserve tune` stored on ``host`` (a composite: its stages' workers and rates); what
    is still unset follows ``host.cores`` (`defaults.serving_defaults`). The same file, options
    and host give the same specs on any machine."""
    chosen = _chosen(options)
    if isinstance(f, CompositeFile):
        if shipped_as is not None:
            f = _tuned_composite(shipped_as, f, host)
        return composite_specs(f, cores=host.cores, **chosen)
    if shipped_as is not None:
        chosen = _with_tuned(shipped_as, f, host, chosen)
    return None, [build_spec(f, cores=host.cores, **chosen)]


def file_specs(
    path: Path | str, host: Host | None = None, **options: Any
) -> tuple[CompositeSpec | None, list[PipelineSpec]]:
    """The composite (None for one pipeline) and ensembles of the pipeline file at ``path`` on
    ``host`` (None: this machine; `resolve`); `PipelineFileError` when it cannot be served as
    written."""
    return resolve(load_file(path), host or this_machine(), **options)


def pipeline_specs(name: str, /, host: Host | None = None, **options: Any) -> list[PipelineSpec]:
    """The ensembles serving shipped pipeline ``name`` on ``host`` (None: this machine): one for
    a single pipeline, several for a composite (where ``arch`` names the first stage's DNN);
    tuned settings applied (`resolve`)."""
    return resolve(shipped(name), host or this_machine(), shipped_as=name, **options)[1]


def pipeline(name: str, /, host: Host | None = None, **options: Any) -> PipelineSpec:
    """The spec of shipped pipeline ``name`` on ``host`` (None: this machine); options that are
    None are left at the file's, or at what `cvserve tune --pipeline` stored on ``host``."""
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}")
    return pipeline_specs(name, host, **options)[0]


def image_pipeline(
    task: str, arch: str | None = None, *, host: Host | None = None, **options: Any
) -> PipelineSpec:
    """The ``task`` pipeline (classify, segment, detect, depth, identify; `builders.TASKS`)
    around ``arch`` (None: the task's own), with ``options`` (`PIPELINE_OPTIONS`) over its file
    (`from_file.task_file`), served on ``host`` (None: this machine); nothing tuned is applied."""
    unknown = sorted(set(options) - PIPELINE_OPTIONS)
    if unknown:
        raise TypeError(f"image_pipeline: unknown options {unknown}")
    cores = (host or this_machine()).cores
    return build_spec(task_file(task), cores=cores, arch=arch, **options)


def classify(arch: str | None = None, **options: Any) -> PipelineSpec:
    return image_pipeline("classify", arch, **options)


def segment(arch: str | None = None, **options: Any) -> PipelineSpec:
    return image_pipeline("segment", arch, **options)


def detect(arch: str | None = None, **options: Any) -> PipelineSpec:
    return image_pipeline("detect", arch, **options)


def depth(arch: str | None = None, **options: Any) -> PipelineSpec:
    return image_pipeline("depth", arch, **options)


def identify(arch: str | None = None, **options: Any) -> PipelineSpec:
    return image_pipeline("identify", arch, **options)
