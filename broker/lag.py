"""Consumer lag of a pipeline's stage groups: committed offset vs end of each partition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, OffsetSpec

from cvserve.broker.clients import (
    TopicPartition,
    new_admin,
    retry_while_leadership_moves,
    topic_partitions,
)
from cvserve.broker.routes import route
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics, default_namespace
from cvserve.deploy.kafka import pid_alive


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


def _committed(admin: AdminClient, group: str) -> dict[TopicPartition, int]:
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {tp: tp.offset for tp in future.result().topic_partitions or [] if tp.offset >= 0}


def _latest(admin: AdminClient, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})
    return {tp: future.result().offset for tp, future in futures.items()}


def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The offsets ``group`` committed (empty if it never did)."""
    return _committed(new_admin(bootstrap), group)


def pipeline_lag(bootstrap: str, pipeline: str, namespace: str | None = None) -> list[PartitionLag]:
    """Lag of every partition of every stage topic of ``pipeline``."""
    topics = Topics(pipeline, namespace or default_namespace())
    rows: list[PartitionLag] = []
    admin = new_admin(bootstrap)
    for stage in route(pipeline).stage_names:
        topic = topics.stage_in(stage)
        try:
            partitions = [
                TopicPartition(topic, p) for p in topic_partitions(admin, topic, bootstrap)
            ]
        except KeyError:
            continue
        group = topics.group(stage)
        ends = retry_while_leadership_moves(lambda tps=partitions: _latest(admin, tps))
        committed = _committed(admin, group)
        for tp in partitions:
            rows.append(
                PartitionLag(stage, group, topic, tp.partition, committed.get(tp), ends[tp])
            )
    return rows


def live_workers(stats_dir: Path) -> list[WorkerStats]:
    """Stats of the worker processes still running that write into ``stats_dir``."""
    workers = []
    for path in sorted(Path(stats_dir).glob("*.json")):
        stats = WorkerStats.read(path)
        if stats is not None and stats.state != "stopped" and pid_alive(stats.pid):
            workers.append(stats)
    return workers
