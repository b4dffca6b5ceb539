"""The GPU-server deployment files validate against their schemas (offline validators)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def validate(document: dict) -> None:
    kubernetes_validate.validate(document, "1.37.0", strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_validates(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        validate(document)


def test_validator_catches_a_broken_manifest() -> None:
    document = yaml.safe_load((DEPLOY / "k8s" / "triton-deployment.yaml").read_text())
    document["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(document)


def test_triton_deployment_probes_readiness_requests_a_gpu_and_is_scraped() -> None:
    document = yaml.safe_load((DEPLOY / "k8s" / "triton-deployment.yaml").read_text())
    pod = document["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    hpa = yaml.safe_load((DEPLOY / "k8s" / "triton-hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == document["metadata"]["name"]


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.prefix) / "bin" / "check-jsonschema"
    return subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = check_compose(DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text((DEPLOY / "compose.yaml").read_text().replace("ports:", "portz:", 1))
    assert check_compose(broken).returncode != 0
