"""Redis Streams stage workers as processes of their own (``python -m
cvserve.pipelines.app.redis_commands worker``): `StageWorkerProcesses` with another command line,
the same start, watch (stats files) and stop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cvserve.broker.worker_processes import StageWorkerProcesses, WorkerCommand

REDIS_WORKER_MODULE = "cvserve.pipelines.app.redis_commands"
redis_worker_command = WorkerCommand(REDIS_WORKER_MODULE, "--redis-url")


@dataclass
class RedisWorkerProcesses(StageWorkerProcesses):
    """Redis workers for every stage of ``pipeline``, as many as `StageWorkerProcesses` starts;
    ``bootstrap`` is the Redis URL (``redis://host:port``)."""

    command_line: ClassVar[WorkerCommand] = redis_worker_command
