"""Three brokers, replication factor 3, min.insync.replicas 2: stage workers keep answering while
brokers are SIGKILLed under them, nothing acknowledged is lost, and with two of three down nothing
is acknowledged at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_testing import (
    HEARTBEAT_INTERVAL_MS,
    PIPELINE,
    SESSION_TIMEOUT_MS,
    WorkerUnderTest,
    small_jpegs,
    wait_until,
)

from cvserve.broker.clients import DeliveryError, new_admin
from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import ResultReader
from cvserve.broker.topics import Topics
from cvserve.broker.worker_processes import worker_command
from cvserve.deploy.kafka_cluster import KafkaCluster

pytestmark = [pytest.mark.kafka, pytest.mark.server, pytest.mark.slow]
IMAGES = 48


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(tmp_path_factory.mktemp("cluster"), brokers=3, heap_mb=384) as running:
        yield running


def busiest_partition_leader(cluster: KafkaCluster, topic: str, counts: dict[int, int]) -> int:
    """The node id leading the partition of ``topic`` that received the most records."""
    partitions = new_admin(cluster.bootstrap).list_topics(topic, timeout=30).topics[topic]
    busiest = max(counts, key=lambda p: counts[p])
    return partitions.partitions[busiest].leader


def test_leaders_killed_mid_run_lose_and_duplicate_nothing(
    cluster: KafkaCluster, triton_url: str, namespace: str, tmp_path: Path
) -> None:
    topics = Topics(PIPELINE, namespace)
    workers = []
    for n in range(2):
        options = [
            "--session-timeout-ms", str(SESSION_TIMEOUT_MS),
            "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS),
            "--batch-size", "4",
        ]  # fmt: skip
        stats = tmp_path / f"worker{n}.json"
        command = worker_command(
            cluster.bootstrap, namespace, PIPELINE, None, triton_url, stats, options
        )
        workers.append(WorkerUnderTest.start(PIPELINE, command, stats))
    images = small_jpegs(IMAGES, first_seed=2000)
    try:
        with ImageProducer(cluster.bootstrap, PIPELINE, namespace) as producer:
            # Every topic has three replicas and needs two in sync to acknowledge. A broker other
            # than the one that created the topics may not know them yet: ask until it does.
            admin = new_admin(cluster.bootstrap)
            names = topics.all([PIPELINE])

            def replica_counts() -> dict[str, set[int]]:
                metadata = admin.list_topics(timeout=30).topics
                return {
                    n: {len(p.replicas) for p in metadata[n].partitions.values()}
                    for n in names
                    if n in metadata
                }

            three = {n: {3} for n in names}
            wait_until(lambda: replica_counts() == three, 30, "3 replicas each", replica_counts)
            first = producer.submit(images[: IMAGES // 2], key="")
            with ResultReader(cluster.bootstrap, PIPELINE, namespace) as reader:
                wait_until(
                    lambda: reader.poll(0.2) is not None and len(reader.by_request) >= 4,
                    180,
                    "the first results",
                )
                # Mid-run: the leader of the partition that took the most requests dies.
                counts: dict[int, int] = {}
                for messages in reader.by_request.values():
                    partition = int(messages[0].origin.split("/")[-1].split("@")[0])
                    counts[partition] = counts.get(partition, 0) + 1
                victim = busiest_partition_leader(cluster, topics.stage_in(PIPELINE), counts)
                cluster.kill(victim)
                second = producer.submit(images[IMAGES // 2 :], key="")
                # It comes back; then one more broker dies.
                cluster.restart(victim)
                cluster.kill(victim % 3 + 1)
                found = reader.collect([*first, *second], timeout_s=300)
                assert len(found) == IMAGES  # 0 lost
                assert all(len(results) == 1 for results in found.values())  # 0 duplicated
                for worker in workers:  # the group kept going: both workers still run
                    assert worker.process.poll() is None, worker.log()[-2000:]

            # Two of three down: the cluster has no quorum and one replica at most; a record is
            # never acknowledged, the producer fails loudly once its delivery timeout passes.
            cluster.kill(victim)
            timeouts = {"delivery.timeout.ms": 8000, "request.timeout.ms": 4000}
            refused = ImageProducer(cluster.bootstrap, PIPELINE, namespace, **timeouts)
            _, future = refused.send(images[0])
            with pytest.raises((DeliveryError, TimeoutError)):
                refused.wait([future], timeout_s=60)
    finally:
        for worker in workers:
            worker.managed.stop(timeout_s=0)
