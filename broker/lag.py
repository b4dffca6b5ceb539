"""Consumer lag of a pipeline's stage groups: committed offset vs end of each partition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.structs import TopicPartition

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


def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The offsets ``group`` committed (empty if it never did)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def pipeline_lag(bootstrap: str, pipeline: str, namespace: str | None = None) -> list[PartitionLag]:
    """Lag of every partition of every stage topic of ``pipeline``."""
    topics = Topics(pipeline, namespace or default_namespace())
    rows: list[PartitionLag] = []
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        for stage in route(pipeline).stage_names:
            topic = topics.stage_in(stage)
            if topic not in existing:
                continue
            group = topics.group(stage)
            described = admin.describe_topics([topic])[0]
            partitions = [
                TopicPartition(topic, p["partition_index"]) for p in described["partitions"]
            ]
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
            committed = admin.list_group_offsets(group).get(group, {})
            for tp in sorted(partitions):
                meta = committed.get(tp)
                rows.append(
                    PartitionLag(
                        stage,
                        group,
                        topic,
                        tp.partition,
                        meta.offset if meta is not None and meta.offset >= 0 else None,
                        ends[tp].offset,
                    )
                )
    finally:
        admin.close()
    return rows


def live_workers(stats_dir: Path) -> list[WorkerStats]:
    """Stats of the worker processes still running that write into ``stats_dir``."""
    workers = []
    for path in sorted(Path(stats_dir).glob("*.json")):
        stats = WorkerStats.read(path)
        if stats is not None and stats.state != "stopped" and pid_alive(stats.pid):
            workers.append(stats)
    return workers
