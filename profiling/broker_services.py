"""Where a run's broker and Triton are: the given ones, else started for the run (Kafka here;
`profiling.redisload.redis_services` for Redis Streams), and the run's own topic namespace."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cvserve.deploy.kafka import KafkaBroker
from cvserve.pipelines.spec import PipelineSpec
from cvserve.profiling.sweep import serve_traced


def run_namespace() -> str:
    """A topic (or stream) prefix of this run alone: its topics and groups start empty."""
    return f"profile-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class BrokerServices:
    """Where the broker and Triton are, whether this run started them, and the run's namespace."""

    bootstrap: str
    triton_url: str
    namespace: str
    started: tuple[str, ...]


@contextlib.contextmanager
def broker_services(
    specs: Sequence[PipelineSpec],
    workdir: Path,
    bootstrap: str | None = None,
    triton_url: str | None = None,
) -> Iterator[BrokerServices]:
    """Kafka and a traceable Triton serving ``specs``: the given ones, else started in
    ``workdir`` (and stopped, by pid, on exit)."""
    started = []
    with contextlib.ExitStack() as stack:
        if not bootstrap:
            broker = stack.enter_context(KafkaBroker(workdir / "kafka"))
            bootstrap = broker.bootstrap
            started.append(f"Kafka {bootstrap}")
        if not triton_url:
            server = stack.enter_context(serve_traced(specs, workdir / "triton"))
            triton_url = server.grpc_url
            started.append(f"Triton {triton_url}")
        yield BrokerServices(bootstrap, triton_url, run_namespace(), tuple(started))
