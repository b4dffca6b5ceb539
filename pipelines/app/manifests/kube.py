"""What every generated Kubernetes object shares: labels, metadata, and the Triton it talks to.

Labels: ``app.kubernetes.io/part-of: cvserve`` on everything; ``name`` says what runs
(``cvserve-worker``, ``cvserve-kafka``, …), ``component`` its role, ``instance`` the pipeline's
deployment (`DeployPlan.instance`), ``cvserve.io/stage`` a worker's broker stage. The Triton
Deployment and Service are the hand-written ones in ``deploy/k8s/``: their selector, Service name
and ports are read from those files, not repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cvserve import deploy
from cvserve.pipelines.app.manifests.plan import DeployPlan

Document = dict[str, Any]

PART_OF = "cvserve"
WORKER_NAME = "cvserve-worker"
STAGE_LABEL = "cvserve.io/stage"
K8S_DIR = Path(deploy.__file__).resolve().parent / "k8s"


def labels(plan: DeployPlan, name: str, component: str, stage: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/instance": plan.instance,
    }
    if stage is not None:
        out[STAGE_LABEL] = stage
    return out


def worker_selector(plan: DeployPlan, stage: str) -> dict[str, str]:
    """The labels that pick one stage's worker pods (a Deployment's selector)."""
    return {
        "app.kubernetes.io/name": WORKER_NAME,
        "app.kubernetes.io/instance": plan.instance,
        STAGE_LABEL: stage,
    }


def any_worker_selector() -> dict[str, str]:
    """The labels of every cvserve worker pod, whatever its pipeline (Triton serves them all)."""
    return {"app.kubernetes.io/name": WORKER_NAME, "app.kubernetes.io/part-of": PART_OF}


def metadata(name: str, object_labels: dict[str, str], **extra: Any) -> Document:
    return {"name": name, "labels": object_labels, **extra}


@dataclass(frozen=True)
class TritonRef:
    """The Triton of ``deploy/k8s/``: its pods' labels, its Service's name and ports by name,
    and its container's port names (what a NetworkPolicy names)."""

    pod_labels: dict[str, str]
    service: str
    service_ports: dict[str, int]
    container_ports: tuple[str, ...]

    @property
    def grpc_url(self) -> str:
        return f"{self.service}:{self.service_ports['grpc']}"


@cache
def triton_ref() -> TritonRef:
    deployment = yaml.safe_load((K8S_DIR / "triton-deployment.yaml").read_text())
    service = yaml.safe_load((K8S_DIR / "triton-service.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return TritonRef(
        pod_labels=dict(deployment["spec"]["selector"]["matchLabels"]),
        service=service["metadata"]["name"],
        service_ports={p["name"]: int(p["port"]) for p in service["spec"]["ports"]},
        container_ports=tuple(p["name"] for p in container["ports"]),
    )
