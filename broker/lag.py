"""Consumer lag of a pipeline's stage groups: committed offset vs end of each partition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, OffsetSpec

from cvserve.broker.clients import (
    TopicPartition,
    cluster_topics,
    new_admin,
    new_consumer,
    retry_while_leadership_moves,
    topic_partitions,
)
from cvserve.broker.routes import Route, as_route
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics, default_namespace
from cvserve.deploy.process import pid_alive


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a stage's topic: ``committed`` is None before the group's first commit."""

    stage: str
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def committed_offsets(
    bootstrap: str, group: str, partitions: list[TopicPartition] | None = None
) -> dict[TopicPartition, int]:
    """What ``group`` committed for ``partitions`` (default: every partition of the cluster;
    empty if it never did).

    Asked through a consumer of the group, not the admin API: librdkafka 2.16's
    ListConsumerGroupOffsets crashes the process (SIGSEGV in rd_kafka_cgrp_op) when a broker
    answers NOT_COORDINATOR for a group it has not seen yet (librdkafka issue 5040).
    """
    consumer = new_consumer(bootstrap, group)  # never subscribes: joins nothing, commits nothing
    try:
        if partitions is None:
            partitions = [
                TopicPartition(topic, p)
                for topic, metadata in cluster_topics(consumer, bootstrap).items()
                if not topic.startswith("__")
                for p in metadata.partitions
            ]
        if not partitions:
            return {}
        answer = retry_while_leadership_moves(lambda: consumer.committed(partitions, timeout=30))
        return {TopicPartition(t.topic, t.partition): t.offset for t in answer if t.offset >= 0}
    finally:
        consumer.close()


def _latest(admin: AdminClient, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})
    return {tp: future.result().offset for tp, future in futures.items()}


def pipeline_lag(
    bootstrap: str, pipeline: Route | str, namespace: str | None = None
) -> list[PartitionLag]:
    """Lag of every partition of every stage topic of ``pipeline`` (a `Route`, or the name of a
    pipeline served as one ensemble)."""
    probe = LagProbe(bootstrap, pipeline, namespace)
    try:
        return probe.rows()
    finally:
        probe.close()


class LagProbe:
    """`pipeline_lag` asked again and again with the same clients (one admin; per stage group a
    consumer that never subscribes: joins nothing, commits nothing), as a soak samples it every
    second. Committed offsets through a consumer of the group, as `committed_offsets` asks them
    (and says why)."""

    def __init__(self, bootstrap: str, pipeline: Route | str, namespace: str | None = None) -> None:
        pipeline_route = as_route(pipeline)
        self.topics = Topics(pipeline_route.pipeline, namespace or default_namespace())
        self.stages = pipeline_route.stage_names
        self.bootstrap = bootstrap
        self.admin = new_admin(bootstrap)
        self.consumers = {s: new_consumer(bootstrap, self.topics.group(s)) for s in self.stages}

    def rows(self) -> list[PartitionLag]:
        rows: list[PartitionLag] = []
        for stage in self.stages:
            topic = self.topics.stage_in(stage)
            try:
                partitions = [
                    TopicPartition(topic, p)
                    for p in topic_partitions(self.admin, topic, self.bootstrap)
                ]
            except KeyError:
                continue
            ends = retry_while_leadership_moves(lambda tps=partitions: _latest(self.admin, tps))
            consumer = self.consumers[stage]
            answer = retry_while_leadership_moves(
                lambda tps=partitions, c=consumer: c.committed(tps, timeout=30)
            )
            done = {(t.topic, t.partition): t.offset for t in answer if t.offset >= 0}
            group = self.topics.group(stage)
            for tp in partitions:
                committed = done.get((tp.topic, tp.partition))
                rows.append(PartitionLag(stage, group, topic, tp.partition, committed, ends[tp]))
        return rows

    def total(self) -> int:
        return sum(row.lag for row in self.rows())

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()


def live_workers(stats_dir: Path) -> list[WorkerStats]:
    """Stats of the worker processes still running that write into ``stats_dir``."""
    workers = []
    for path in sorted(Path(stats_dir).glob("*.json")):
        stats = WorkerStats.read(path)
        if stats is not None and stats.state != "stopped" and pid_alive(stats.pid):
            workers.append(stats)
    return workers
