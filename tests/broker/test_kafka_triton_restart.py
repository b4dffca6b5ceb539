"""Triton killed mid-run under a stage worker: nothing unanswered is committed, the worker
retries with backoff, and once Triton is back every message is answered."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from broker_testing import PIPELINE, small_jpegs, wait_until

from cvserve.broker.lag import committed_offsets
from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import ResultReader
from cvserve.broker.topics import Topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.ports import free_port
from cvserve.deploy.triton import TritonServer
from cvserve.models.repository.local import write_repository
from cvserve.pipelines.spec import PipelineSpec

pytestmark = [pytest.mark.kafka, pytest.mark.server]


def test_triton_killed_mid_run_commits_nothing_unanswered_and_recovers(
    kafka: KafkaBroker, classify_spec: PipelineSpec, start_worker, namespace, tmp_path: Path
) -> None:
    repository = write_repository(classify_spec, tmp_path / "repository")
    ports = {name: free_port() for name in ("http_port", "grpc_port", "metrics_port")}

    def triton(run: int) -> TritonServer:
        return TritonServer(repository, workdir=tmp_path / f"triton{run}", **ports).start()

    server = triton(1)
    worker = start_worker(server.grpc_url)
    group = Topics(PIPELINE, namespace).group(PIPELINE)
    try:
        with (
            ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer,
            ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader,
        ):
            first = producer.submit(small_jpegs(4, first_seed=700))
            reader.collect(first, timeout_s=90)
            wait_until(
                lambda: sum(committed_offsets(kafka.bootstrap, group).values()) == 4,
                30,
                "the answered messages committed",
            )

            os.killpg(server.process.pid, signal.SIGKILL)  # Triton and its stubs, mid-run
            server.process.wait(timeout=30)
            server.stop()
            second = producer.submit(small_jpegs(4, first_seed=800))
            worker.wait_stats(lambda s: s.retries >= 2, 60, "retrying against the dead Triton")
            assert sum(committed_offsets(kafka.bootstrap, group).values()) == 4
            assert not set(second) & set(reader.by_request)

            server = triton(2)  # back on the same address
            assert len(reader.collect(second, timeout_s=120)) == 4
        wait_until(
            lambda: sum(committed_offsets(kafka.bootstrap, group).values()) == 8,
            30,
            "every message committed once answered",
        )
        assert worker.process.poll() is None, "the worker must survive Triton's death"
    finally:
        server.stop()
