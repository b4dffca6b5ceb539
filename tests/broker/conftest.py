"""Fixtures of the Redis Streams tests: one real redis-server for the session (loopback, no
persistence) and Redis stage workers as processes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from broker_testing import PIPELINE, WorkerUnderTest, worker_starter

from cvserve.broker.redis_worker_processes import redis_worker_command
from cvserve.deploy.redis import REDIS_INSTALL, REDIS_SERVER, RedisServer


def require_redis_server() -> None:
    """Fail under CI (which installs it), else skip, when redis-server is absent."""
    if shutil.which(REDIS_SERVER) is None:
        message = f"{REDIS_SERVER} not found: {REDIS_INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's real redis-server."""
    require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def start_redis_worker(
    redis_server: RedisServer, tmp_path: Path, namespace: str
) -> Iterator[Callable[..., WorkerUnderTest]]:
    """Start Redis stage workers of ``classify`` in this test's namespace; killed (by pid) after
    it."""

    def command(triton_url: str, stats_path: Path, extra: Sequence[str]) -> list[str]:
        return redis_worker_command(
            redis_server.url, namespace, PIPELINE, None, triton_url, stats_path, extra
        )

    with worker_starter(command, tmp_path, "redis-worker") as start:
        yield start
