"""A stage worker as a container runs it: its command line and the HTTP endpoints it serves.

The endpoints are the worker's contract (``cvserve worker --metrics-address``): ``/metrics``
(Prometheus text), ``/healthz`` (200 once the consumer has its assignment and Triton answers, else
503: readiness) and ``/livez`` (200 while the poll loop runs: liveness).
"""

from __future__ import annotations

from cvserve.broker.worker_metrics import LIVE_PATH, METRICS_PATH, READY_PATH
from cvserve.broker.worker_metrics import POD_PORT as METRICS_PORT
from cvserve.pipelines.app.manifests.plan import DeployPlan

__all__ = ["LIVE_PATH", "METRICS_PATH", "METRICS_PORT", "READY_PATH", "worker_command"]
METRICS_PORT_NAME = "metrics"
# SIGTERM: the worker finishes its in-flight batch and commits; a Triton call may take seconds.
STOP_GRACE_S = 60


def worker_command(plan: DeployPlan, stage: str, bootstrap: str, triton_url: str) -> list[str]:
    """``cvserve worker`` for ``stage`` of ``plan``, serving its endpoints on every interface."""
    if stage not in {s.name for s in plan.stages}:
        raise KeyError(f"{plan.pipeline} has no broker stage {stage!r}")
    return [
        "cvserve",
        "worker",
        "--file",
        plan.worker_file,
        "--stage",
        stage,
        "--bootstrap",
        bootstrap,
        "--triton-url",
        triton_url,
        "--metrics-address",
        f"0.0.0.0:{METRICS_PORT}",
    ]


def prometheus_annotations() -> dict[str, str]:
    """The ``prometheus.io/*`` annotations a pod scrape config reads."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
