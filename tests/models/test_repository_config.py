"""One config writer: every batching and instance field of the spec, the same in every target."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from cvserve.models.repository.config import STAGE_PARAMETER, read_config
from cvserve.models.repository.local import write_repository
from cvserve.models.repository.ngc import write_ngc_repository
from cvserve.pipelines.app.cli import main
from cvserve.pipelines.catalog import classify, image_pipeline, pipeline
from cvserve.pipelines.spec import PipelineSpec, StageSpec

KINDS = {"cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU}


def batching_and_instances(config: mc.ModelConfig) -> dict[str, object]:
    return {
        "max_batch_size": config.max_batch_size,
        "max_queue_delay_us": config.dynamic_batching.max_queue_delay_microseconds,
        "preferred_batch_sizes": tuple(config.dynamic_batching.preferred_batch_size),
        "instances": [(g.count, g.kind) for g in config.instance_group],
    }


def declared(stage: StageSpec) -> dict[str, object]:
    return {
        "max_batch_size": stage.batching.max_batch_size,
        "max_queue_delay_us": stage.batching.max_queue_delay_us,
        "preferred_batch_sizes": stage.batching.preferred_batch_sizes,
        "instances": [(stage.instances, KINDS[stage.device])],
    }


def configs(repository: Path, spec: PipelineSpec) -> dict[str, mc.ModelConfig]:
    return {s.name: read_config(repository / s.name / "config.pbtxt") for s in spec.stages}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_every_target_writes_the_specs_batching_and_instances(tmp_path: Path, device: str) -> None:
    spec = image_pipeline(
        "classify",
        "mobilenet_v3_small",
        device=device,
        max_batch_size=16,
        instances=3,
        max_queue_delay_us=750,
    )
    targets = {
        "local": write_repository(spec, tmp_path / "local"),
        "ngc-torchscript": write_ngc_repository(spec, tmp_path / "ts", "torchscript"),
        "ngc-onnx": write_ngc_repository(spec, tmp_path / "onnx", "onnx", tensorrt=True),
    }
    expected = {s.name: declared(s) for s in spec.stages}
    assert expected["classify_dnn"]["max_queue_delay_us"] == 750
    for target, repository in targets.items():
        written = {n: batching_and_instances(c) for n, c in configs(repository, spec).items()}
        assert written == expected, target


def test_cli_ngc_gpu_build_keeps_preferred_sizes_and_queue_delay(tmp_path: Path) -> None:
    argv = ["repo", "build", "--pipeline", "classify", "--target", "ngc", "--device", "gpu"]
    assert main([*argv, "--arch", "mobilenet_v3_small", "--out", str(tmp_path)]) == 0
    spec = pipeline("classify", arch="mobilenet_v3_small", device="gpu")
    for name, config in configs(tmp_path, spec).items():
        assert config.max_batch_size > 0, name
        assert tuple(config.dynamic_batching.preferred_batch_size) == (32, 64), name
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000, name


def test_python_stage_carries_its_typed_params_once(tmp_path: Path) -> None:
    spec = classify()
    write_repository(spec, tmp_path)
    for stage in spec.stages:
        config = read_config(tmp_path / stage.name / "config.pbtxt")
        text = config.parameters[STAGE_PARAMETER].string_value
        assert type(stage.params).from_json(text) == stage.params
