"""Kafka topic and consumer-group names of a pipeline, and creating its topics.

Names derive from the pipeline name and its broker stages only:
``<namespace>.<pipeline>.<stage>.in`` (what a stage consumes), ``<namespace>.<pipeline>.results``,
``<namespace>.<pipeline>.dead-letter``; a stage's workers share the group
``<namespace>.<pipeline>.<stage>``. The namespace (default ``cvserve``) separates deployments
sharing one cluster. Topics are created with replication factor min(3, brokers) and
``min.insync.replicas`` min(2, that) (`deploy.kafka.replication_for`): with cvserve's acks=all
producers an acknowledged record is on two brokers whenever the cluster has two.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cvserve.deploy.kafka import DEFAULT_PARTITIONS, replication_for
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.deploy.process import poll_until

NAMESPACE_ENV = "CVSERVE_KAFKA_NAMESPACE"
DEFAULT_NAMESPACE = "cvserve"


def default_namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


@dataclass(frozen=True)
class Topics:
    """The topic and group names of one pipeline."""

    pipeline: str
    namespace: str = DEFAULT_NAMESPACE

    @property
    def prefix(self) -> str:
        return f"{self.namespace}.{self.pipeline}"

    def stage_in(self, stage: str) -> str:
        """What ``stage`` consumes."""
        return f"{self.prefix}.{stage}.in"

    @property
    def results(self) -> str:
        return f"{self.prefix}.results"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    def group(self, stage: str) -> str:
        """The consumer group of ``stage``'s workers."""
        return f"{self.prefix}.{stage}"

    def all(self, stages: Iterable[str]) -> list[str]:
        return [*(self.stage_in(s) for s in stages), self.results, self.dead_letter]


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = DEFAULT_PARTITIONS,
    limits: MessageLimits = LIMITS,
    timeout_s: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> list[str]:
    """Create those of ``names`` that do not exist (sized for images, plus the topic configs in
    ``config``); returns the created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    from cvserve.broker.clients import cluster_topics, new_admin

    admin = new_admin(bootstrap)
    existing = set(cluster_topics(admin, bootstrap, timeout_s=timeout_s))
    missing = [n for n in dict.fromkeys(names) if n not in existing]
    if not missing:
        return []
    replicas, min_isr = replication_for(len(admin.list_topics(timeout=timeout_s).brokers))
    config = {**limits.topic_config(), "min.insync.replicas": str(min_isr), **(config or {})}
    futures = admin.create_topics(
        [NewTopic(n, partitions, replicas, config=config) for n in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    for future in futures.values():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another worker was first
                raise
    _wait_for_leaders(admin, missing, timeout_s)
    return missing


def _wait_for_leaders(admin: Any, names: list[str], timeout_s: float) -> None:
    """Block until every partition of ``names`` has a leader (the topics take records)."""

    def led() -> bool:
        topics = admin.list_topics(timeout=timeout_s).topics
        return all(
            n in topics
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        )

    poll_until(led, timeout_s, what=f"a leader for every partition of {names}")
