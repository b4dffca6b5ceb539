"""Closed-loop load over Redis Streams: the services of a run (a Redis server and a Triton) and
the client `profiling.kafkaload.closed_loop_over_broker` drives — its `BrokerClient` with a
Redis producer and result reader, so the load, the warm-up and the rows are the Kafka run's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from cvserve.broker.redis_results import RedisResultReader
from cvserve.broker.redis_streams import RedisImageProducer
from cvserve.broker.routes import Route
from cvserve.deploy.redis import RedisServer
from cvserve.pipelines.spec import PipelineSpec
from cvserve.profiling.broker_services import BrokerServices, run_namespace
from cvserve.profiling.kafkaload import BrokerClient, BrokerRequest
from cvserve.profiling.sweep import serve_traced


class RedisBrokerClient(BrokerClient):
    """The producer and result reader of one pipeline in one namespace, over Redis Streams."""

    def __init__(self, url: str, pipeline: Route | str, namespace: str) -> None:
        # The base's state with Redis clients (its own constructor would open Kafka ones).
        self.producer = RedisImageProducer(url, pipeline, namespace)  # type: ignore[assignment]
        self.reader = RedisResultReader(url, pipeline, namespace, keep=False)  # type: ignore[assignment]
        self.pending: dict[str, BrokerRequest] = {}
        self.late = 0


@contextlib.contextmanager
def redis_services(
    specs: Sequence[PipelineSpec],
    workdir: Path,
    url: str | None = None,
    triton_url: str | None = None,
) -> Iterator[BrokerServices]:
    """Redis and a traceable Triton serving ``specs``: the given ones, else started in
    ``workdir`` (and stopped, by pid, on exit); ``bootstrap`` is the Redis URL."""
    started = []
    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(RedisServer(workdir / "redis")).url
            started.append(f"Redis {url}")
        if not triton_url:
            triton_url = stack.enter_context(serve_traced(specs, workdir / "triton")).grpc_url
            started.append(f"Triton {triton_url}")
        yield BrokerServices(url, triton_url, run_namespace(), tuple(started))
