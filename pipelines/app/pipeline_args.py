"""How every command is told which pipeline to serve: ``--pipeline NAME`` (a shipped pipeline
file) or ``--file F`` (the user's), with the catalog's options; one error line when a file cannot
be served as written."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from cvserve.broker.routes import Route, composite_route, named_route, single_ensemble
from cvserve.models.params import PRECISIONS, TARGET_ENGINES, DnnParams, PostprocessParams
from cvserve.pipelines.catalog import (
    COMPOSITES,
    PIPELINE_OPTIONS,
    PIPELINES,
    composite_of,
    resolve,
    shipped,
    shipped_composites,
)
from cvserve.pipelines.host import Host, this_machine
from cvserve.pipelines.pipeline_file import CompositeFile, PipelineFileError, load_file
from cvserve.pipelines.spec import CompositeSpec, PipelineSpec
from cvserve.pipelines.tuned import SETTINGS
from cvserve.pipelines.variants import unfused

FILE_HELP = (
    "a pipeline file (YAML): your model, its input and its postprocessing "
    "(README: Serve your own model); instead of --pipeline"
)


def add_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", default=None, metavar="F", help=FILE_HELP)


@dataclass(frozen=True)
class Chosen:
    """The pipeline a command serves: its name, composite (None: one ensemble), ensembles, and
    the file it came from (None: a shipped one)."""

    name: str
    composite: CompositeSpec | None
    specs: list[PipelineSpec]
    file: Path | None

    @property
    def worker_args(self) -> tuple[str, ...]:
        """What a stage worker started for it needs to find its route."""
        return ("--file", str(self.file)) if self.file else ()

    @property
    def route(self) -> Route:
        """Its broker route: the composite's stages, else its one ensemble."""
        if self.composite is not None:
            return composite_route(self.composite)
        return single_ensemble(self.name)


# Pipeline options no command line gives (a `PreprocessSpec`, a renamed ensemble): an argument
# of the same name (`cvserve profile --preprocess` placements) is not one of them.
NOT_FROM_THE_COMMAND_LINE = frozenset({"preprocess", "name"})


def options_of(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline options among the parsed arguments (the parsers name them as the catalog)."""
    wanted = PIPELINE_OPTIONS - NOT_FROM_THE_COMMAND_LINE
    return {k: v for k, v in vars(args).items() if k in wanted}


def setting_overrides(items: list[str], command: str) -> dict[str, object]:
    """``SETTING=VALUE`` items as serving settings (`pipelines.tuned.SETTINGS`): ``true`` /
    ``false``, integers, ``4,8`` (preferred batch sizes) or words; one line naming a bad item."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in SETTINGS:
            raise SystemExit(
                f"cvserve {command}: {item!r}: give SETTING=VALUE, SETTING one of "
                f"{', '.join(SETTINGS)}"
            )
        words = text.split(",")
        if key == "preferred_batch_sizes" and all(w.isdigit() for w in words):
            out[key] = tuple(int(w) for w in words)
        elif text in ("true", "false"):
            out[key] = text == "true"
        else:
            out[key] = int(text) if text.isdigit() else text
    return out


def _fail(command: str, exc: Exception) -> SystemExit:
    return SystemExit(f"cvserve {command}: {exc}")


def chosen(
    args: argparse.Namespace, command: str, host: Host | None = None, **options: object
) -> Chosen:
    """The pipeline ``args`` name (``--file`` over ``--pipeline``), built with the command's
    options (``options`` over those parsed) for ``host`` (None: this machine;
    `catalog.resolve`)."""
    merged = {**options_of(args), **options}
    file = getattr(args, "file", None)
    host = host or this_machine()
    try:
        if file:
            composite, specs = resolve(load_file(file), host, **merged)
            name = composite.name if composite else specs[0].name
            path: Path | None = Path(file).resolve()
        else:
            name, path = args.pipeline, None
            composite, specs = resolve(shipped(name), host, shipped_as=name, **merged)
    except (PipelineFileError, KeyError) as exc:
        raise _fail(command, exc) from None
    return Chosen(name, composite, specs, path)


def one_spec(args: argparse.Namespace, command: str) -> PipelineSpec:
    """The single ensemble a command serves; a composite is refused with one line."""
    c = chosen(args, command)
    if c.composite is not None:
        parts = ", ".join(c.composite.parts)
        raise SystemExit(
            f"cvserve {command}: {c.name} is a composite ({parts}) served across Kafka: give one "
            "of its pipelines, or use cvserve profile / cvserve worker"
        )
    return c.specs[0]


def catalog_route(name: str, host: Host | None = None) -> Route:
    """The broker route of the shipped pipeline ``name``: its composite's stages, with the
    workers `cvserve tune` stored for ``host`` (None: this machine) where the file sets none,
    else its one ensemble."""
    return named_route(name, shipped_composites(host or this_machine()))


def file_route(file: Path | str) -> Route:
    """The broker route of pipeline file ``file`` (parsed, nothing built): a composite file's
    stages, else its one ensemble. `PipelineFileError` for a file cvserve cannot read."""
    loaded = load_file(file)
    if isinstance(loaded, CompositeFile):
        return composite_route(composite_of(loaded))
    return single_ensemble(loaded.name)


def pipeline_route(args: argparse.Namespace, command: str) -> Route:
    """The broker route of ``--file`` (parsed, nothing built) or ``--pipeline`` (the catalog's
    composite of that name, else its one ensemble): for the broker commands, which need only
    routes and names. Every broker class and worker is handed this route."""
    file = getattr(args, "file", None)
    if not file:
        return catalog_route(args.pipeline)
    try:
        return file_route(file)
    except PipelineFileError as exc:
        raise _fail(command, exc) from None


def pipeline_name(args: argparse.Namespace, command: str) -> str:
    """The pipeline name of ``--file`` or ``--pipeline`` (`pipeline_route`)."""
    return pipeline_route(args, command).pipeline


def class_names(spec: PipelineSpec) -> list[str]:
    """Names of the classes a pipeline's answers index: the file's labels, an architecture's
    (torchvision's where known), else ``class_<i>``."""
    spec = unfused(spec)
    post = next((s for s in spec.stages if s.role == "postprocess"), None)
    if post is not None and isinstance(post.params, PostprocessParams) and post.params.labels:
        return list(post.params.labels)
    dnn = spec.stage_by_role("inference")
    if isinstance(dnn.params, DnnParams) and dnn.params.arch:
        from cvserve.models.zoo import class_names as arch_class_names

        return arch_class_names(dnn.params.arch, dnn.params.num_classes)
    return _Generic()


class _Generic(list):
    """``class_<i>`` for any index (a model whose classes have no names)."""

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        return f"class_{index}"


def add_pipeline_options(
    parser: argparse.ArgumentParser, allow_all: bool = False, composites: bool = False
) -> None:
    """--pipeline or --file, and every pipeline option (`catalog.PIPELINE_OPTIONS`) by its name;
    ``--pipeline`` may name a composite with ``composites`` (and ``all`` with ``allow_all``)."""
    choices = [
        *sorted(PIPELINES),
        *(sorted(COMPOSITES) if composites or allow_all else ()),
        *(("all",) if allow_all else ()),
    ]
    parser.add_argument("--pipeline", default="classify", choices=choices)
    add_file_option(parser)
    parser.add_argument("--arch", default=None, help="DNN architecture (default: the pipeline's)")
    parser.add_argument(
        "--weights",
        default=None,
        help="state-dict file, or DEFAULT for torchvision's (needs internet)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random weights")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--torch-threads", type=int, default=None, help="per DNN instance")
    parser.add_argument("--dali-threads", type=int, default=None, help="per preprocess instance")
    parser.add_argument("--max-queue-delay-us", type=int, default=None, help="dynamic batching")
    parser.add_argument(
        "--engine",
        default=None,
        choices=TARGET_ENGINES,
        help="what runs the DNN (default: the fastest measured on this machine within the "
        "accuracy bound; `cvserve bench engines`); repo build --target ngc: which Triton "
        "backend serves it (tensorrt: ONNX through TensorRT, GPU)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="allow reduced precision: bf16 on the CPU (openvino, where the CPU has it); fp16 "
        "or bf16 on a GPU (torch)",
    )
    parser.add_argument(
        "--fuse-stages",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="serve preprocessing, the DNN and postprocessing as one model (CPU; `cvserve "
        "tune` measures whether it pays)",
    )
    parser.add_argument("--score-threshold", type=float, default=None, help="detect: min score")
    parser.add_argument(
        "--max-detections", type=int, default=None, help="detect: at most this many"
    )
