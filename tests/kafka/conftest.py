"""Fixtures of the Kafka tests: one real Kafka broker per session, stage workers as processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker_testing import HEARTBEAT_INTERVAL_MS, PIPELINE, SESSION_TIMEOUT_MS, WorkerUnderTest

from cvserve.broker.worker_processes import worker_command
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton import TritonServer


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's real Kafka broker (KRaft, one node, loopback)."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), heap_mb=512)
    broker.start(timeout_s=120)
    yield broker
    broker.stop()


@pytest.fixture
def namespace() -> str:
    """A topic namespace of this test alone: its topics and groups start empty."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def start_worker(
    kafka: KafkaBroker, tmp_path: Path, namespace: str
) -> Iterator[Callable[..., WorkerUnderTest]]:
    """Start stage workers of ``classify`` in this test's namespace; killed (by pid) after it."""
    started: list[WorkerUnderTest] = []

    def start(triton_url: str, *extra: str) -> WorkerUnderTest:
        stats_path = tmp_path / f"worker{len(started)}.json"
        options = [
            "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
            "--batch-size", "4",
            *extra,
        ]  # fmt: skip
        command = worker_command(
            kafka.bootstrap, namespace, PIPELINE, None, triton_url, stats_path, options
        )
        worker = WorkerUnderTest.start(PIPELINE, command, stats_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.managed.stop(timeout_s=0)  # killed: the test is over


@pytest.fixture
def triton_url(triton: TritonServer) -> str:
    return triton.grpc_url
