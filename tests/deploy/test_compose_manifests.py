"""`cvserve deploy compose`: one GPU server's compose file generated from a pipeline file
validates against the compose spec, runs deploy/compose.yaml's Triton and one worker service per
broker stage, each with its replicas and a health check on the worker's readiness endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from manifest_validation import check_compose

from cvserve.pipelines.app.manifests.compose import compose_document, write_compose
from cvserve.pipelines.app.manifests.plan import ManifestError, plan_deployment
from cvserve.pipelines.app.pipeline_args import catalog_route
from cvserve.pipelines.pipeline_file import SHIPPED

BASE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"


@pytest.mark.parametrize("name", ["detect_identify", "classify"])
def test_generated_compose_validates_against_the_compose_spec(tmp_path: Path, name: str) -> None:
    compose, pipeline = write_compose(plan_deployment(SHIPPED / f"{name}.yaml"), tmp_path)
    result = check_compose(compose)
    assert result.returncode == 0, result.stdout + result.stderr
    assert pipeline.read_text() == (SHIPPED / f"{name}.yaml").read_text()


def test_a_broken_compose_file_fails_the_compose_spec(tmp_path: Path) -> None:
    compose, _ = write_compose(plan_deployment(SHIPPED / "classify.yaml"), tmp_path)
    text = compose.read_text()
    compose.write_text(text.replace("replicas:", "replicaz:", 1))
    assert check_compose(compose).returncode != 0


def test_one_worker_service_per_stage_with_replicas_and_a_readiness_check() -> None:
    plan = plan_deployment(SHIPPED / "detect_identify.yaml")
    document = compose_document(plan, replicas={"identify": 3})
    workers = {n: s for n, s in document["services"].items() if n.startswith("worker-")}
    stages = catalog_route("detect_identify").stage_names
    assert sorted(workers) == sorted(f"worker-{s}" for s in stages)
    assert workers["worker-identify"]["deploy"]["replicas"] == 3
    assert workers["worker-detect"]["deploy"]["replicas"] == 1
    for name, service in workers.items():
        command = service["command"]
        assert command[command.index("--stage") + 1] == name.removeprefix("worker-")
        assert command[command.index("--triton-url") + 1] == "triton:8001"
        assert "http://127.0.0.1:9464/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["kafka"] == {"condition": "service_healthy"}


def test_triton_is_deploy_compose_yamls_and_kafka_serves_the_compose_network() -> None:
    document = compose_document(plan_deployment(SHIPPED / "classify.yaml"))
    base = yaml.safe_load(BASE.read_text())
    assert document["services"]["triton"] == base["services"]["triton"]
    kafka_env = document["services"]["kafka"]["environment"]
    assert "INTERNAL://kafka:19092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    (worker,) = (s for n, s in document["services"].items() if n.startswith("worker-"))
    assert worker["command"][worker["command"].index("--bootstrap") + 1] == "kafka:19092"


@pytest.mark.parametrize("replicas", [{"nope": 1}, {"classify": 0}, {"classify": 99}])
def test_impossible_replicas_are_refused(replicas: dict[str, int]) -> None:
    with pytest.raises(ManifestError):
        compose_document(plan_deployment(SHIPPED / "classify.yaml"), replicas=replicas)
