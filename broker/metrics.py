"""Consumer lag and worker counters in the Prometheus text format (``cvserve kafka lag
--format prometheus``): for a node-exporter textfile collector, a sidecar, or an HPA adapter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cvserve.broker.lag import PartitionLag
from cvserve.broker.stats import WorkerStats

PREFIX = "cvserve"
# Worker counter -> (metric type, help). Names follow Prometheus conventions (_total counters).
WORKER_METRICS: dict[str, tuple[str, str]] = {
    "in_flight": ("gauge", "Consumed messages not yet answered by Triton."),
    "consumed": ("counter", "Records consumed from the stage's topic."),
    "results": ("counter", "Results produced to the results topic."),
    "forwarded": ("counter", "Messages produced to a later stage (crops)."),
    "dead_lettered": ("counter", "Records sent to the dead-letter topic."),
    "retries": ("counter", "Waits for Triton to come back."),
    "committed_batches": ("counter", "Batches whose offsets were committed."),
}


def _labels(**labels: object) -> str:
    def escape(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def prometheus_text(
    pipeline: str, rows: Sequence[PartitionLag], workers: Sequence[WorkerStats]
) -> str:
    """The exposition of ``pipeline``'s lag per partition and each live worker's counters."""
    lines = _family(
        f"{PREFIX}_kafka_consumer_lag",
        "gauge",
        "Records between the group's committed offset and the end of the partition.",
        (
            f"{PREFIX}_kafka_consumer_lag"
            + _labels(
                pipeline=pipeline,
                stage=r.stage,
                group=r.group,
                topic=r.topic,
                partition=r.partition,
            )
            + f" {r.lag}"
            for r in rows
        ),
    )
    for field, (kind, help_text) in WORKER_METRICS.items():
        name = f"{PREFIX}_worker_{field}" + ("_total" if kind == "counter" else "")
        lines += _family(
            name,
            kind,
            help_text,
            (
                name
                + _labels(pipeline=w.pipeline, stage=w.stage, pid=w.pid)
                + f" {getattr(w, field)}"
                for w in workers
            ),
        )
    return "\n".join(lines) + "\n"
