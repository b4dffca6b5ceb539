"""Shared by the Kafka tests besides fixtures: polling with a deadline, images, worker processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cvserve.broker.clients import new_producer
from cvserve.broker.stats import WorkerStats
from cvserve.broker.worker_processes import WorkerProcess
from cvserve.deploy.process import poll_until
from cvserve.preprocess.synthetic import synthetic_image

PIPELINE = "classify"
# Short group timings: a killed worker's partitions move within seconds.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str,
    diagnose: Callable[[], object] | None = None,
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at deadline
    (and what ``diagnose()`` says then, when given)."""
    try:
        return poll_until(predicate, timeout_s, what=what)
    except TimeoutError:
        seen = f" ({diagnose()})" if diagnose is not None else ""
        pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}{seen}")


def small_jpegs(count: int, first_seed: int = 0) -> list[bytes]:
    """Distinct small JPEGs of a few sizes (quick to preprocess on CPU)."""
    sizes = ((96, 72), (64, 64), (120, 80), (80, 100))
    return [
        synthetic_image(*sizes[seed % len(sizes)], seed=seed)
        for seed in range(first_seed, first_seed + count)
    ]


class WorkerUnderTest(WorkerProcess):
    """A ``cvserve worker`` subprocess a test watches and signals."""

    def wait_stats(self, predicate: Callable[[WorkerStats], bool], timeout_s: float, what: str):
        def check() -> WorkerStats | None:
            if self.process.poll() is not None:
                pytest.fail(
                    f"worker exited ({self.process.returncode}) while waiting for {what}:\n"
                    f"{self.log()[-3000:]}"
                )
            stats = self.stats()
            return stats if stats is not None and predicate(stats) else None

        return wait_until(check, timeout_s, f"worker {self.process.pid}: {what}")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


@contextlib.contextmanager
def worker_starter(
    command_of: Callable[[str, Path, Sequence[str]], list[str]], folder: Path, name: str
) -> Iterator[Callable[..., WorkerUnderTest]]:
    """A fixture's ``start(triton_url, *extra)``: starts a stage worker of `PIPELINE` from
    ``command_of(triton_url, stats_path, extra)``, its stats at ``folder/<name><n>.json``.
    Every worker it started is killed (by pid) on exit: the test is over."""
    started: list[WorkerUnderTest] = []

    def start(triton_url: str, *extra: str) -> WorkerUnderTest:
        stats_path = folder / f"{name}{len(started)}.json"
        command = command_of(triton_url, stats_path, extra)
        worker = WorkerUnderTest.start(PIPELINE, command, stats_path)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.managed.stop(timeout_s=0)


def require_tool(name: str, install: str) -> str:
    """The path of command ``name``: fails under CI (which installs it), skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: {install}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


class RawProducer:
    """Sends records exactly as given (any key, value, headers), as another client would;
    `send` returns where the broker put each (``topic/partition@offset``, the ``source`` a
    worker names in its dead letters and the ``origin`` of its results)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer = new_producer(bootstrap)

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list | None = None
    ) -> str:
        placed: list[str] = []

        def delivered(error: object, message: object) -> None:
            assert error is None, f"broker refused a test record: {error}"
            placed.append(f"{message.topic()}/{message.partition()}@{message.offset()}")

        self._producer.produce(topic, value, key, headers=headers or [], on_delivery=delivered)
        self._producer.flush(60)
        assert placed, "the broker did not acknowledge a test record within 60 s"
        return placed[0]

    def send_with_kcat(
        self, topic: str, key: bytes, value_file: Path, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Send with Debian's kcat (it takes header names confluent-kafka cannot: any bytes)."""
        kcat = require_tool("kcat", "apt-get install kcat")
        args = [kcat.encode(), b"-P", b"-b", self.bootstrap.encode(), b"-t", topic.encode()]
        args += [b"-k", key]
        for name, value in headers:
            args += [b"-H", name + b"=" + value]
        done = subprocess.run([*args, bytes(value_file)], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr


def every_crop_came_back(reader: object, ids: list[str]) -> bool:
    """Whether each request has its detection result and one result per crop it announced
    (``reader``: a `broker.results.ResultReader`, polled here)."""
    from cvserve.broker.crops import CROP_COUNT
    from cvserve.broker.schema import decode_outputs

    reader.poll()  # type: ignore[attr-defined]
    for request_id in ids:
        got = reader.by_request.get(request_id, [])  # type: ignore[attr-defined]
        detections = [m for m in got if m.crop is None]
        if not detections:
            return False
        crops = int(decode_outputs(detections[0].value)[CROP_COUNT][0])
        if len(got) != 1 + crops:
            return False
    return True


def fanned_out_results(
    bootstrap: str, route: object, namespace: str, images: list[bytes]
) -> tuple[list[str], dict[str, list]]:
    """Submit ``images`` to the fan-out pipeline of ``route`` (a `broker.routes.Route`), read its
    results until every image has its detection and every crop its result (at most 180 s):
    (request ids in order, the results by request id)."""
    from cvserve.broker.producer import ImageProducer
    from cvserve.broker.results import ResultReader

    with ImageProducer(bootstrap, route, namespace) as producer:  # type: ignore[arg-type]
        ids = producer.submit(images)
    with ResultReader(bootstrap, route, namespace) as reader:  # type: ignore[arg-type]
        wait_until(
            lambda: every_crop_came_back(reader, ids),
            180,
            "a detection result and every crop's embedding per image",
        )
        return ids, {i: reader.by_request[i] for i in ids}


@dataclass
class FakeMessage:
    """A consumed record as confluent-kafka's ``Message`` shows it (no broker)."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes = b"v"

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[Any]:
        return []
