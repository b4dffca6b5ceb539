"""Run a local Redis server (Debian's ``redis-server``) for the broker comparison: Redis Streams
between stage workers instead of Kafka topics.

In memory only (``--save ''``, ``--appendonly no``): the server is a measurement's transport, not
a store — what it holds is gone when it stops. Bound to one loopback address and port (a free one
unless given), ready once it answers ``PING``, stopped by pid (SIGTERM: Redis exits at once
without persistence; SIGKILL after ``stop_timeout_s``).
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cvserve.deploy.ports import free_port
from cvserve.deploy.process import ManagedProcess, ProcessStartError

REDIS_INSTALL = "apt-get install redis-server"
REDIS_SERVER = "redis-server"
# RESP inline command and its answer: enough to see a server is up without a client library.
_PING, _PONG = b"PING\r\n", b"+PONG"


class RedisStartError(ProcessStartError):
    """redis-server is absent, exited, or never answered; the message says which (and quotes its
    log)."""


def redis_server_binary() -> str:
    """The path of ``redis-server``; `RedisStartError` naming the package to install if absent."""
    path = shutil.which(REDIS_SERVER)
    if path is None:
        raise RedisStartError(f"{REDIS_SERVER} not found on PATH: {REDIS_INSTALL}")
    return path


def ping(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if a Redis server at ``host:port`` answers ``PING``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_PING)
            return sock.recv(len(_PONG)) == _PONG
    except OSError:
        return False


@dataclass
class RedisServer:
    """One local redis-server writing its log into ``state_dir``; use as a context manager or
    `start` / `stop`. ``url`` is what clients connect to (``redis://host:port``)."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int | None = None
    stop_timeout_s: float = 10.0
    managed: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.state_dir) / "redis.log"

    def command(self, binary: str) -> list[str]:
        """The server's command line: loopback, no persistence, log to stdout (our log file)."""
        return [
            binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(Path(self.state_dir).resolve()),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def start(self, timeout_s: float = 30.0) -> RedisServer:
        """Launch and wait until ``PING`` answers; `RedisStartError` otherwise."""
        binary = redis_server_binary()
        if self.port is None:
            self.port = free_port(self.host)
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        self.managed = ManagedProcess(
            f"redis-server {self.host}:{self.port}",
            self.command(binary),
            self.log_path,
            cwd=Path(self.state_dir),
            error=RedisStartError,
        ).start()
        try:
            self.managed.wait_ready(lambda: ping(self.host, int(self.port or 0)), timeout_s)
        except RedisStartError:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        return self.managed is not None and self.managed.running()

    def stop(self) -> int | None:
        """SIGTERM by pid, SIGKILL after ``stop_timeout_s``; returns the exit code."""
        managed, self.managed = self.managed, None
        return None if managed is None else managed.stop(self.stop_timeout_s)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
