"""The brokers a pipeline's stages can run across, by name: each one's services (the broker and a
Triton, started unless given), its stage worker processes and its closed-loop client. Kafka is
the default; Redis Streams is the in-memory broker the paper compared it with."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from cvserve.broker.redis_worker_processes import RedisWorkerProcesses
from cvserve.broker.worker_processes import StageWorkerProcesses
from cvserve.profiling.broker_services import BrokerServices, broker_services
from cvserve.profiling.kafkaload import BrokerClient
from cvserve.profiling.redisload import RedisBrokerClient, redis_services


@dataclass(frozen=True)
class Transport:
    """``services(specs, workdir, address, triton_url)`` yields `BrokerServices`;
    ``workers`` and ``client`` take its ``bootstrap`` (a Kafka bootstrap or a Redis URL)."""

    name: str
    label: str
    services: Callable[..., AbstractContextManager[BrokerServices]]
    workers: type[StageWorkerProcesses]
    client: Callable[[str, str, str], Any]


TRANSPORTS = {
    "kafka": Transport("kafka", "Kafka", broker_services, StageWorkerProcesses, BrokerClient),
    "redis": Transport(
        "redis", "Redis Streams", redis_services, RedisWorkerProcesses, RedisBrokerClient
    ),
}
