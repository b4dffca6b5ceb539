"""`pipelines.from_file`, the only way a spec is made: command-line options override file
fields, every task is a file, and a spec is built for the cores it is given (a `Host`'s, passed
by `catalog.resolve`), never this machine's."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from own_models import INPUT, OUTPUTS, SIZE, embedder, export_onnx

from cvserve.models.params import DnnParams
from cvserve.pipelines.builders import TASKS
from cvserve.pipelines.catalog import image_pipeline, shipped
from cvserve.pipelines.defaults import UNKNOWN_HOST_THREADS
from cvserve.pipelines.from_file import (
    MODEL_OPTIONS,
    PIPELINE_OPTIONS,
    POSTPROCESS_OPTIONS,
    SERVING_OPTIONS,
    build_spec,
    composite_specs,
    task_file,
    with_options,
)
from cvserve.pipelines.pipeline_file import (
    CompositeFile,
    PipelineFile,
    PipelineFileError,
    load_file,
)
from cvserve.pipelines.spec import PipelineSpec
from cvserve.preprocess.spec import PreprocessParams


def threads(spec: PipelineSpec) -> tuple[int, int]:
    """(DALI threads, DNN threads) of ``spec``."""
    pre = spec.stage_by_role("preprocess").params_as(PreprocessParams)
    dnn = spec.stage_by_role("inference").params_as(DnnParams)
    return pre.num_threads, dnn.torch_threads


def arch_file(tmp_path: Path, serving: str = "") -> PipelineFile:
    path = tmp_path / "arch.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: small
        model: {arch: mobilenet_v3_small}
        postprocess: {kind: classification}
        """)
        + serving
    )
    loaded = load_file(path)
    assert isinstance(loaded, PipelineFile)
    return loaded


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> PipelineFile:
    root = tmp_path_factory.mktemp("onnx")
    export_onnx(embedder(), root / "embedder.onnx", INPUT, OUTPUTS["embedder"])
    path = root / "emb.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: emb
        model: {{onnx: embedder.onnx}}
        input: {{size: [{SIZE}, {SIZE}]}}
        postprocess: {{kind: embedding}}
        """)
    )
    loaded = load_file(path)
    assert isinstance(loaded, PipelineFile)
    return loaded


def test_an_arch_file_gets_the_cores_it_is_given(tmp_path: Path) -> None:
    pf = arch_file(tmp_path)
    assert threads(build_spec(pf, cores=5)) == (5, 5)
    assert threads(build_spec(pf, cores=None)) == (UNKNOWN_HOST_THREADS, UNKNOWN_HOST_THREADS)
    assert threads(build_spec(pf, cores=5, torch_threads=3)) == (5, 3)  # the command line's
    gpu = build_spec(pf, cores=64, device="gpu")
    assert threads(gpu) == (16, 1)  # a quarter of the cores feed the GPU
    fixed = arch_file(tmp_path, "serving: {dali_threads: 2, torch_threads: 1}\n")
    assert threads(build_spec(fixed, cores=64)) == threads(build_spec(fixed, cores=None)) == (2, 1)


def test_a_model_file_gets_the_cores_it_is_given(onnx_file: PipelineFile) -> None:
    assert threads(build_spec(onnx_file, cores=6)) == (6, 6)
    target = build_spec(onnx_file, cores=None)
    assert threads(target) == (UNKNOWN_HOST_THREADS, UNKNOWN_HOST_THREADS)
    assert target.stage_by_role("inference").instances == 1


def test_the_cores_are_never_defaulted_to_this_machine(tmp_path: Path) -> None:
    pf = arch_file(tmp_path)
    with pytest.raises(TypeError, match="cores"):
        build_spec(pf)  # type: ignore[call-arg]
    cf = shipped("detect_identify")
    assert isinstance(cf, CompositeFile)
    with pytest.raises(TypeError, match="cores"):
        composite_specs(cf)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("cores", "options", "dnn_threads"),
    [
        (6, {}, 3),  # two DNNs on one CPU server share its cores
        (1, {}, 1),  # never fewer than one
        (None, {}, UNKNOWN_HOST_THREADS),  # cores unknown: the fixed default, no sharing
        (6, {"torch_threads": 2}, 2),  # the command line's
        (64, {"device": "gpu"}, 1),  # a GPU stage's DNN needs one host thread
    ],
)
def test_a_composites_stages_share_the_cores_they_are_given(
    cores: int | None, options: dict[str, object], dnn_threads: int
) -> None:
    cf = shipped("detect_identify")
    assert isinstance(cf, CompositeFile)
    composite, specs = composite_specs(cf, cores=cores, **options)
    assert composite.parts == ("detect", "identify")
    assert [threads(s)[1] for s in specs] == [dnn_threads, dnn_threads]


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({"arch": "resnet18"}, lambda f: f.model.arch, "resnet18"),
        ({"seed": 3, "weights": "w.pt"}, lambda f: (f.model.seed, f.model.weights), (3, "w.pt")),
        ({"num_classes": 10}, lambda f: f.model.num_classes, 10),
        (
            {"device": "gpu", "instances": 2},
            lambda f: (f.serving.device, f.serving.instances),
            ("gpu", 2),
        ),
        ({"preferred_batch_sizes": (2, 4)}, lambda f: f.serving.preferred_batch_sizes, (2, 4)),
        ({"top_k": 3}, lambda f: f.postprocess.options["top_k"], 3),
        ({"name": "mine"}, lambda f: f.name, "mine"),
        ({"top_k": None}, lambda f: f.postprocess.options.get("top_k"), None),  # None: the file's
    ],
)
def test_each_command_line_option_overrides_its_file_field(
    options: dict[str, object], field: object, value: object
) -> None:
    overridden = with_options(task_file("classify"), **options)
    assert field(overridden) == value  # type: ignore[operator]


def test_options_of_another_kind_of_pipeline_are_left_or_refused(onnx_file: PipelineFile) -> None:
    segment = with_options(task_file("segment"), top_k=3, max_detections=7)
    assert segment.postprocess.options == {}  # a segmenter has no top-k
    detect = with_options(task_file("detect"), score_threshold=0.5, max_detections=7)
    assert detect.postprocess.options == {"score_threshold": 0.5, "max_detections": 7}
    with pytest.raises(PipelineFileError, match="model.arch: given as an option, but the model"):
        with_options(onnx_file, arch="resnet18")


def test_every_task_is_a_file_and_builds_as_one(tmp_path: Path) -> None:
    for task in TASKS:
        spec = build_spec(task_file(task), cores=2)
        assert spec.name == task
        assert spec.stage_by_role("inference").params_as(DnnParams).arch == TASKS[task].default_arch
    # The same file written out builds the same spec.
    path = tmp_path / "classify.yaml"
    path.write_text(
        "name: classify\nmodel: {arch: resnet50}\npostprocess: {kind: classification}\n"
    )
    written = load_file(path)
    assert isinstance(written, PipelineFile)
    assert build_spec(written, cores=2) == build_spec(task_file("classify"), cores=2)


def test_the_options_are_the_file_fields_a_command_line_overrides() -> None:
    assert set(MODEL_OPTIONS) | set(SERVING_OPTIONS) | set(POSTPROCESS_OPTIONS) < PIPELINE_OPTIONS
    assert PIPELINE_OPTIONS - {*MODEL_OPTIONS, *SERVING_OPTIONS, *POSTPROCESS_OPTIONS} == {
        "name",
        "preprocess",
    }
    with pytest.raises(TypeError, match="unknown options"):
        image_pipeline("classify", top_kk=3)
