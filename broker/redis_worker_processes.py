"""Redis Streams stage workers as processes of their own (``python -m
cvserve.pipelines.app.redis_commands worker``): `StageWorkerProcesses` with another command line,
the same start, watch (stats files) and stop."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cvserve.broker.worker_processes import StageWorkerProcesses

# The worker subcommand without the rest of the `cvserve` parser (a quicker start).
REDIS_WORKER_MODULE = "cvserve.pipelines.app.redis_commands"


def redis_worker_command(
    url: str,
    namespace: str,
    pipeline: str,
    stage: str | None,
    triton_url: str,
    stats_path: Path,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of one Redis stage worker (``stage`` None: the route's first)."""
    return [
        sys.executable, "-m", REDIS_WORKER_MODULE, "worker",
        "--redis-url", url, "--namespace", namespace, "--pipeline", pipeline,
        *(("--stage", stage) if stage else ()), "--triton-url", triton_url,
        "--stats-file", str(stats_path), *extra_args,
    ]  # fmt: skip


@dataclass
class RedisWorkerProcesses(StageWorkerProcesses):
    """``per_stage`` Redis workers for every stage of ``pipeline``; ``bootstrap`` is the Redis
    URL (``redis://host:port``)."""

    def command(self, stage: str, stats_path: Path) -> list[str]:
        return redis_worker_command(
            self.bootstrap,
            self.namespace,
            self.pipeline,
            stage,
            self.triton_url,
            stats_path,
            self.extra_args,
        )
