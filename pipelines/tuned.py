"""Where `cvserve tune`'s chosen settings go, and how they come back.

A pipeline file gets them written into its ``serving:`` section (`write_serving`: the rest of the
file, comments included, as it was), so `repo build` and every command then serve with them. A
shipped pipeline (`--pipeline NAME`) gets them stored for this machine (`deploy.measurements`,
kind ``tuned``, keyed by pipeline, network and device: `tuned_key`), and the catalog serves with
them wherever neither the command line nor the file sets a value (`catalog.pipeline`).
Settings are `SETTINGS`, the ``serving:`` fields a tuner chooses, with the file's names.

A composite's tuning is its stages' worker processes and the records/s one worker sustains
(`STAGE_SETTINGS`, fields of each ``composite:`` entry): written into a composite file
(`write_stage_settings`) or stored for a shipped composite (`stage_settings_key`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvserve.deploy import measurements

KIND = "tuned"
SETTINGS: tuple[str, ...] = (
    "engine",
    "precision",
    "max_batch_size",
    "max_queue_delay_us",
    "preferred_batch_sizes",
    "instances",
    "dali_threads",
    "torch_threads",
    "fuse_stages",
)


STAGE_SETTINGS: tuple[str, ...] = ("workers", "rate")


def tuned_key(pipeline: str, arch: str | None, num_classes: int | None, device: str) -> str:
    return f"{pipeline}|arch={arch}|classes={num_classes}|device={device}"


def stored_settings(key: str) -> dict[str, Any]:
    """The settings `cvserve tune` stored for ``key`` on this machine ({} when never tuned)."""
    value = measurements.get(KIND, key)
    if not isinstance(value, dict):
        return {}
    out = {k: v for k, v in value.items() if k in SETTINGS and v is not None}
    if "preferred_batch_sizes" in out:
        out["preferred_batch_sizes"] = tuple(out["preferred_batch_sizes"])
    return out


def store_settings(key: str, settings: dict[str, Any]) -> Path:
    """Store ``settings`` for ``key``; the store's path."""
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    return measurements.put(KIND, key, {k: v for k, v in clean.items() if k in SETTINGS})


def write_serving(path: Path, settings: dict[str, Any]) -> None:
    """Set ``settings`` in the ``serving:`` section of the pipeline file at ``path`` (created
    when absent); everything else in the file, comments included, is kept."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text())
    serving = data.get("serving")
    if serving is None:
        serving = data["serving"] = CommentedMap()
        data.yaml_set_comment_before_after_key("serving", before="chosen by cvserve tune")
    for key in SETTINGS:
        if key not in settings:
            continue
        value = settings[key]
        if isinstance(value, tuple | list) and not value:  # none: the file says nothing
            serving.pop(key, None)
            continue
        if isinstance(value, tuple | list):
            seq = CommentedSeq(list(value))
            seq.fa.set_flow_style()
            value = seq
        serving[key] = value
    with path.open("w") as f:
        yaml.dump(data, f)


def stage_settings_key(composite: str) -> str:
    return f"{composite}|stages"


def stored_stage_settings(key: str) -> dict[str, dict[str, Any]]:
    """Stage → `STAGE_SETTINGS` that `cvserve tune` stored for composite ``key`` ({} if none)."""
    value = measurements.get(KIND, key)
    if not isinstance(value, dict):
        return {}
    return {
        stage: {k: v for k, v in fields.items() if k in STAGE_SETTINGS and v is not None}
        for stage, fields in value.items()
        if isinstance(fields, dict)
    }


def store_stage_settings(key: str, stages: dict[str, dict[str, Any]]) -> Path:
    """Store stage → `STAGE_SETTINGS` for composite ``key``; the store's path."""
    clean = {s: {k: v for k, v in f.items() if k in STAGE_SETTINGS} for s, f in stages.items()}
    return measurements.put(KIND, key, clean)


def write_stage_settings(path: Path, stages: dict[str, dict[str, Any]]) -> None:
    """Set each stage's `STAGE_SETTINGS` (stage: its ``pipeline:`` name) in the ``composite:``
    entries of the composite file at ``path``; everything else, comments included, is kept."""
    from ruamel.yaml import YAML

    from cvserve.pipelines.pipeline_file import CompositeFile, load_file

    loaded = load_file(path)
    assert isinstance(loaded, CompositeFile), f"{path} is not a composite"
    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text())
    for entry, part in zip(data["composite"], loaded.parts, strict=True):
        for key in STAGE_SETTINGS:
            value = stages.get(part.pipeline.name, {}).get(key)
            if value is not None:
                entry[key] = value
    with path.open("w") as f:
        yaml.dump(data, f)
