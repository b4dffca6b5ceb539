"""Kafka topic and consumer-group names of a pipeline, and creating its topics.

Names derive from the pipeline name and its broker stages only:
``<namespace>.<pipeline>.<stage>.in`` (what a stage consumes), ``<namespace>.<pipeline>.results``,
``<namespace>.<pipeline>.dead-letter``; a stage's workers share the group
``<namespace>.<pipeline>.<stage>``. The namespace (default ``cvserve``) separates deployments
sharing one cluster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cvserve.deploy.kafka_limits import LIMITS, MessageLimits

NAMESPACE_ENV = "CVSERVE_KAFKA_NAMESPACE"
DEFAULT_NAMESPACE = "cvserve"
# Enough for a few workers per stage to share the load; a group uses at most this many.
DEFAULT_PARTITIONS = 6


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
) -> list[str]:
    """Create those of ``names`` that do not exist (sized for images); returns the created."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        options = {"num_partitions": partitions, "configs": limits.topic_config()}
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
            admin.create_topics(
                {name: dict(options) for name in missing}, timeout_ms=int(timeout_s * 1000)
            )
        admin.wait_for_topics(missing, timeout_ms=int(timeout_s * 1000))
        return missing
    finally:
        admin.close()
