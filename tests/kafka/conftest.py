"""Fixtures of the Kafka tests: one real Kafka broker per session, stage workers as processes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker_testing import HEARTBEAT_INTERVAL_MS, PIPELINE, SESSION_TIMEOUT_MS, WorkerProcess

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
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start stage workers of ``classify`` in this test's namespace; killed (by pid) after it."""
    started: list[WorkerProcess] = []

    def start(triton_url: str, *extra: str) -> WorkerProcess:
        n = len(started)
        stats_path = tmp_path / f"worker{n}.json"
        log_path = tmp_path / f"worker{n}.log"
        command = [
            sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "worker",
            "--bootstrap", kafka.bootstrap,
            "--namespace", namespace,
            "--pipeline", PIPELINE,
            "--triton-url", triton_url,
            "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
            "--batch-size", "4",
            "--stats-file", str(stats_path),
            *extra,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, stats_path, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(timeout=30)


@pytest.fixture
def triton_url(triton: TritonServer) -> str:
    return triton.grpc_url
