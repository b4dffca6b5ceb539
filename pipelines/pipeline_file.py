"""Pipeline files: one YAML file = one pipeline (or one composite of pipelines over Kafka).

`load_file` reads and validates a file into a typed `PipelineFile` (or `CompositeFile`); every
error is a `PipelineFileError` naming the file, the field and what was expected. Nothing here
reads the model: `pipelines.from_file` turns a `PipelineFile` into the `PipelineSpec`, checking
it against the model. The format is written out in the README ("Serve your own model"); the
catalog's pipelines are such files (`pipelines/files/*.yaml`).

Relative paths in a file (model files, labels, a postprocess function's folder) are relative to
the file's folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml

from cvserve.models.detection_heads import BOX_FORMATS
from cvserve.models.params import POSTPROCESS_TENSORS, PRECISIONS, TARGET_ENGINES
from cvserve.pipelines.spec import Device
from cvserve.preprocess.spec import Channels, DType, Layout, ResizeMode

MODEL_KINDS = ("arch", "onnx", "torchscript", "triton")
POSTPROCESS_KINDS = (
    "classification",
    "detection",
    "segmentation",
    "depth",
    "embedding",
    "raw",
    "python",
)
# The engine names a pipeline file accepts: cvserve's, and ``triton`` for a model of the user's
# own Triton repository.
FILE_ENGINES = (*TARGET_ENGINES, "triton")


class PipelineFileError(ValueError):
    """A pipeline file that cannot be served as written: names the file, field and cause."""


@dataclass(frozen=True)
class ModelDecl:
    """The DNN: ``kind`` is ``arch`` (a `models.architectures` name, ``weights`` a state dict),
    ``onnx`` / ``torchscript`` (``path``, absolute), or ``triton`` (a model named ``name`` in
    the Triton repository ``repository``, served by its own backend)."""

    kind: str
    arch: str | None = None
    path: Path | None = None
    name: str | None = None
    repository: Path | None = None
    weights: str | None = None
    num_classes: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class InputDecl:
    """What the model's input tensor expects; None: the default (see the README)."""

    tensor: str | None = None
    size: tuple[int, int] | None = None
    resize: str | None = None
    resize_shorter: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    scale: float | None = None
    channels: str = "RGB"
    layout: str = "CHW"
    dtype: str = "float32"
    pad_value: tuple[float, float, float] | None = None
    antialias: bool = True
    multiple_of: int | None = None


@dataclass(frozen=True)
class PostprocessDecl:
    """``kind`` and its options as written (validated per kind by `load_file`)."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingDecl:
    """Batching, instances, device, threads, engine, whether the stages are served as one model
    (``fuse_stages``, CPU only); None: cvserve's defaults for the machine."""

    max_batch_size: int | None = None
    instances: int | None = None
    device: str = "cpu"
    engine: str | None = None
    precision: str | None = None
    torch_threads: int | None = None
    dali_threads: int | None = None
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] | None = None
    fuse_stages: bool | None = None


@dataclass(frozen=True)
class PipelineFile:
    """One pipeline as a file declares it."""

    name: str
    model: ModelDecl
    postprocess: PostprocessDecl
    input: InputDecl = field(default_factory=InputDecl)
    serving: ServingDecl = field(default_factory=ServingDecl)
    description: str = ""
    source: Path | None = None

    def error(self, field: str, message: str) -> PipelineFileError:
        """What is wrong with ``field`` of this file (``input.size``, ``model.onnx``, …)."""
        return PipelineFileError(f"{self.source or self.name}: {field}: {message}")


@dataclass(frozen=True)
class FanOutDecl:
    score_threshold: float = 0.0
    max_crops: int | None = None


@dataclass(frozen=True)
class CompositePart:
    """One stage of a composite: its pipeline, how its detections fan out (all but the last),
    and what `cvserve tune` chose and measured: worker processes, records/s one worker sustains."""

    pipeline: PipelineFile
    fan_out: FanOutDecl | None = None
    workers: int | None = None
    rate: float | None = None


@dataclass(frozen=True)
class CompositeFile:
    """Pipelines joined through Kafka, in the order messages flow."""

    name: str
    parts: tuple[CompositePart, ...]
    description: str = ""
    source: Path | None = None


# --- validation helpers -------------------------------------------------------------------------


class _Where:
    """Names a field in error messages: ``file: model.onnx: ...``."""

    def __init__(self, source: Path | str, path: str = "") -> None:
        self.source = source
        self.path = path

    def __truediv__(self, key: str | int) -> _Where:
        name = f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}"
        return _Where(self.source, name.lstrip("."))

    def error(self, message: str) -> PipelineFileError:
        where = f"{self.path}: " if self.path else ""
        return PipelineFileError(f"{self.source}: {where}{message}")


def _mapping(value: Any, where: _Where, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping of {', '.join(allowed)}; got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise (where / str(unknown[0])).error(
            f"unknown field; expected one of: {', '.join(allowed)}"
        )
    return dict(value)


def _typed(kind: type | tuple[type, ...], what: str) -> Callable[[Any, _Where], Any]:
    def check(value: Any, where: _Where) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise where.error(f"expected {what}; got {value!r}")
        if not isinstance(value, kind):
            raise where.error(f"expected {what}; got {value!r}")
        return value

    return check


_str = _typed(str, "a string")
_bool = _typed(bool, "true or false")
_number = _typed((int, float), "a number")


def _positive_int(value: Any, where: _Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise where.error(f"expected a positive integer; got {value!r}")
    return value


def _positive_number(value: Any, where: _Where) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise where.error(f"expected a number > 0; got {value!r}")
    return float(value)


def _non_negative_int(value: Any, where: _Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error(f"expected an integer >= 0; got {value!r}")
    return value


def _batch_sizes(value: Any, where: _Where) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise where.error(f"expected a list of positive integers; got {value!r}")
    return tuple(_positive_int(v, where) for v in value)


def _choice(choices: tuple[str, ...]) -> Callable[[Any, _Where], str]:
    def check(value: Any, where: _Where) -> str:
        if value not in choices:
            raise where.error(f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    return check


def _numbers(count: int, what: str) -> Callable[[Any, _Where], tuple[float, ...]]:
    def check(value: Any, where: _Where) -> tuple[float, ...]:
        if (
            not isinstance(value, list | tuple)
            or len(value) != count
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
        ):
            raise where.error(f"expected {what}; got {value!r}")
        return tuple(float(v) for v in value)

    return check


def _size(value: Any, where: _Where) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise where.error(f"expected [height, width] in pixels, positive integers; got {value!r}")
    return int(value[0]), int(value[1])


def _file(base: Path) -> Callable[[Any, _Where], Path]:
    def check(value: Any, where: _Where) -> Path:
        path = (base / _str(value, where)).resolve()
        if not path.is_file():
            raise where.error(f"file not found: {path}")
        return path

    return check


def _folder(base: Path) -> Callable[[Any, _Where], Path]:
    def check(value: Any, where: _Where) -> Path:
        path = (base / _str(value, where)).resolve()
        if not path.is_dir():
            raise where.error(f"folder not found: {path}")
        return path

    return check


def _fields(
    data: Any, where: _Where, checks: Mapping[str, Callable[[Any, _Where], Any]]
) -> dict[str, Any]:
    """The fields of mapping ``data``, each checked; unknown fields are errors."""
    values = _mapping(data, where, tuple(checks))
    return {k: checks[k](v, where / k) for k, v in values.items() if v is not None}


# --- sections -----------------------------------------------------------------------------------


def _model(data: Any, where: _Where, base: Path) -> ModelDecl:
    fields = _fields(
        data,
        where,
        {
            "arch": _str,
            "onnx": _file(base),
            "torchscript": _file(base),
            "triton": _str,
            "repository": _folder(base),
            "weights": _str,
            "num_classes": _positive_int,
            "seed": _non_negative_int,
        },
    )
    kinds = [k for k in MODEL_KINDS if k in fields]
    if len(kinds) != 1:
        raise where.error(
            f"expected exactly one of {', '.join(MODEL_KINDS)}; got {kinds or 'none'}"
        )
    kind = kinds[0]
    if kind == "arch":
        from cvserve.models.architectures import ARCHITECTURES

        if fields["arch"] not in ARCHITECTURES:
            raise (where / "arch").error(
                f"unknown architecture {fields['arch']!r}; choose from {', '.join(ARCHITECTURES)}"
            )
    elif {"weights", "num_classes", "seed"} & set(fields):
        extra = sorted({"weights", "num_classes", "seed"} & set(fields))
        raise (where / extra[0]).error(f"only an arch model takes {extra[0]} (this is {kind})")
    if kind == "triton" and "repository" not in fields:
        raise where.error("a triton model needs repository: the folder that holds it")
    if kind != "triton" and "repository" in fields:
        raise (where / "repository").error("only a triton model takes a repository")
    weights = fields.get("weights")
    if weights and weights != "DEFAULT":
        weights = str(_file(base)(weights, where / "weights"))
    return ModelDecl(
        kind=kind,
        arch=fields.get("arch"),
        path=fields.get("onnx") or fields.get("torchscript"),
        name=fields.get("triton"),
        repository=fields.get("repository"),
        weights=weights,
        num_classes=fields.get("num_classes"),
        seed=fields.get("seed", 0),
    )


def _input(data: Any, where: _Where) -> InputDecl:
    rgb = "[r, g, b] (in the channel order), three numbers"
    fields = _fields(
        data,
        where,
        {
            "tensor": _str,
            "size": _size,
            "resize": _choice(get_args(ResizeMode)),
            "resize_shorter": _positive_int,
            "mean": _numbers(3, rgb),
            "std": _numbers(3, rgb),
            "scale": _number,
            "channels": _choice(get_args(Channels)),
            "layout": _choice(get_args(Layout)),
            "dtype": _choice(get_args(DType)),
            "pad_value": _numbers(3, rgb),
            "antialias": _bool,
            "max_side": _positive_int,
            "multiple_of": _positive_int,
        },
    )
    dynamic = fields.get("resize") == "dynamic"
    for key in ("max_side", "multiple_of"):
        if key in fields and not dynamic:
            raise (where / key).error("only a dynamic resize takes it (resize: dynamic)")
    if "max_side" in fields:
        if "size" in fields:
            raise (where / "max_side").error("give size (the largest [H, W]) or max_side")
        fields["size"] = (fields["max_side"],) * 2
    fields.pop("max_side", None)
    if dynamic and "size" not in fields:
        raise (where / "max_side").error("a dynamic resize needs the long-side limit")
    if "scale" in fields and "std" in fields:
        raise (where / "scale").error("give std or scale (= 1 / std), not both")
    if fields.get("scale") == 0 or 0 in fields.get("std", ()):
        raise (where / ("scale" if "scale" in fields else "std")).error("must not be zero")
    return InputDecl(**fields)


# Per postprocess kind: its options and their checks.
_DETECTION_OUTPUTS = ("boxes", "scores", "classes", "count")
_POSTPROCESS_OPTIONS: dict[str, dict[str, Callable[[Any, _Where], Any]]] = {
    "classification": {
        "output": _str,
        "top_k": _positive_int,
        "softmax": _bool,
        "labels": _str,
    },
    "detection": {
        "head": _choice(("yolo", "boxes")),
        "output": _str,
        "outputs": lambda v, w: _fields(v, w, dict.fromkeys(_DETECTION_OUTPUTS, _str)),
        "box_format": _choice(BOX_FORMATS),
        "normalized": _bool,
        "anchors_last": _bool,
        "objectness": _bool,
        "score_threshold": _number,
        "iou_threshold": _number,
        "nms": _bool,
        "class_agnostic": _bool,
        "max_detections": _positive_int,
        "labels": _str,
    },
    "segmentation": {
        "output": _str,
        "activation": _choice(("argmax", "sigmoid")),
        "threshold": _number,
        "labels": _str,
    },
    "depth": {"output": _str},
    "embedding": {"output": _str, "normalize": _bool},
    "raw": {"outputs": lambda v, w: [_str(x, w / i) for i, x in enumerate(_list(v, w))]},
    "python": {
        "function": _str,
        "path": _str,
        "outputs": lambda v, w: [_tensor_decl(x, w / i) for i, x in enumerate(_list(v, w))],
        "with_meta": _bool,
        "options": lambda v, w: dict(_mapping(v, w, tuple(v) if isinstance(v, Mapping) else ())),
        "tensors": _choice(POSTPROCESS_TENSORS),
    },
}


def _list(value: Any, where: _Where) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise where.error(f"expected a non-empty list; got {value!r}")
    return value


def _tensor_decl(value: Any, where: _Where) -> dict[str, Any]:
    from cvserve.pipelines.spec import _TRITON_DTYPES

    fields = _fields(
        value,
        where,
        {
            "name": _str,
            "dtype": _choice(tuple(d for d in _TRITON_DTYPES if d != "bytes")),
            "dims": lambda v, w: tuple(
                _typed(int, "an integer (-1: any)")(d, w / i) for i, d in enumerate(_list(v, w))
            ),
        },
    )
    missing = [k for k in ("name", "dtype", "dims") if k not in fields]
    if missing:
        raise where.error(f"an output needs name, dtype and dims; missing {', '.join(missing)}")
    return fields


def _postprocess(data: Any, where: _Where, base: Path) -> PostprocessDecl:
    if not isinstance(data, Mapping) or "kind" not in data:
        raise where.error(f"expected a mapping with kind: one of {', '.join(POSTPROCESS_KINDS)}")
    kind = _choice(POSTPROCESS_KINDS)(data["kind"], where / "kind")
    options = _fields(
        {k: v for k, v in data.items() if k != "kind"}, where, _POSTPROCESS_OPTIONS[kind]
    )
    if kind == "python":
        for required in ("function", "outputs"):
            if required not in options:
                raise (where / required).error("a python postprocess needs it")
        if ":" not in options["function"]:
            raise (where / "function").error(
                f"expected module:function; got {options['function']!r}"
            )
        options["path"] = str(_folder(base)(options.get("path", "."), where / "path"))
    if "labels" in options:
        options["labels"] = _file(base)(options["labels"], where / "labels")
    return PostprocessDecl(kind, options)


def _serving(data: Any, where: _Where) -> ServingDecl:
    return ServingDecl(
        **_fields(
            data,
            where,
            {
                "max_batch_size": _positive_int,
                "instances": _positive_int,
                "device": _choice(get_args(Device)),
                "engine": _choice(FILE_ENGINES),
                "precision": _choice(PRECISIONS),
                "torch_threads": _positive_int,
                "dali_threads": _positive_int,
                "max_queue_delay_us": _non_negative_int,
                "preferred_batch_sizes": _batch_sizes,
                "fuse_stages": _bool,
            },
        )
    )


_TOP = ("name", "description", "model", "input", "postprocess", "serving")


def parse_pipeline(data: Any, source: Path | str, base: Path, where: _Where) -> PipelineFile:
    """A `PipelineFile` from parsed YAML ``data`` (paths relative to ``base``)."""
    fields = _mapping(data, where, _TOP)
    for required in ("name", "model", "postprocess"):
        if required not in fields:
            raise (where / required).error(
                "missing (a pipeline file needs name, model and " "postprocess)"
            )
    name = _str(fields["name"], where / "name")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise (where / "name").error(
            f"expected letters, digits, _ or - (it names Triton models and Kafka topics); "
            f"got {name!r}"
        )
    return PipelineFile(
        name=name,
        description=_str(fields.get("description", ""), where / "description"),
        model=_model(fields["model"], where / "model", base),
        input=_input(fields.get("input") or {}, where / "input"),
        postprocess=_postprocess(fields["postprocess"], where / "postprocess", base),
        serving=_serving(fields.get("serving") or {}, where / "serving"),
        source=Path(source) if isinstance(source, Path) else None,
    )


def _composite(data: dict[str, Any], source: Path, where: _Where) -> CompositeFile:
    fields = _mapping(data, where, ("name", "description", "composite"))
    name = _str(fields.get("name"), where / "name")
    parts = []
    stages = _list(fields["composite"], where / "composite")
    if len(stages) < 2:
        raise (where / "composite").error("a composite needs two stages or more")
    for i, stage in enumerate(stages):
        at = where / "composite" / i
        stage_fields = _mapping(stage, at, ("pipeline", "fan_out", "workers", "rate"))
        ref = stage_fields.get("pipeline")
        if isinstance(ref, Mapping):
            part = parse_pipeline(ref, source, source.parent, at / "pipeline")
        else:
            part = _referenced(_str(ref, at / "pipeline"), source.parent, at / "pipeline")
        fan_out = stage_fields.get("fan_out")
        last = i == len(stages) - 1
        if last and fan_out is not None:
            raise (at / "fan_out").error("the last stage's outputs are the results: no fan_out")
        if not last and fan_out is None:
            fan_out = {}
        decl = None
        if fan_out is not None:
            checked = _fields(
                fan_out or {},
                at / "fan_out",
                {"score_threshold": _number, "max_crops": _positive_int},
            )
            decl = FanOutDecl(**checked)
        tuned = _fields(
            {k: v for k, v in stage_fields.items() if k in ("workers", "rate")},
            at,
            {"workers": _positive_int, "rate": _positive_number},
        )
        parts.append(CompositePart(part, decl, **tuned))
    return CompositeFile(
        name=name,
        parts=tuple(parts),
        description=_str(fields.get("description", ""), where / "description"),
        source=source,
    )


def _referenced(ref: str, base: Path, where: _Where) -> PipelineFile:
    """A composite stage's ``pipeline:``: a file (relative to the composite's folder) or the
    name of a shipped pipeline."""
    path = (base / ref).resolve()
    if not path.is_file():
        path = SHIPPED / f"{ref}.yaml"
    if not path.is_file():
        raise where.error(f"no pipeline file {ref!r} (nor a shipped pipeline of that name)")
    loaded = load_file(path)
    if isinstance(loaded, CompositeFile):
        raise where.error(f"{ref} is a composite; a stage is one pipeline")
    return loaded


SHIPPED = Path(__file__).resolve().parent / "files"


def load_file(path: Path | str) -> PipelineFile | CompositeFile:
    """The pipeline (or composite) file at ``path``, validated; `PipelineFileError` if it is
    not one."""
    path = Path(path).resolve()
    where = _Where(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise where.error(f"cannot read it: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise where.error(f"not valid YAML: {str(exc).splitlines()[0]}") from exc
    if isinstance(data, Mapping) and "composite" in data:
        return _composite(dict(data), path, where)
    return parse_pipeline(data, path, path.parent, where)


def shipped_files() -> dict[str, Path]:
    """Name → path of every pipeline file shipped with cvserve."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.yaml"))}
