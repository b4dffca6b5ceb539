"""A stopping worker gives the broker ``stop_grace_s`` seconds of wall clock to acknowledge its
outputs, however often the producer returns meanwhile (no broker needed)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from cvserve.broker.worker import BatchAbandoned, StageWorker
from cvserve.broker.worker_config import WorkerConfig
from cvserve.pipelines.app.pipeline_args import catalog_route

GRACE_S = 0.5


class InstantProducer:
    """``poll`` returns at once, as when callbacks keep arriving."""

    polls = 0

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 1


class IdleConsumer:
    def poll(self, timeout: float) -> None:
        return None


def test_stop_grace_is_wall_clock_seconds_not_producer_returns() -> None:
    worker = StageWorker(
        "127.0.0.1:1",
        catalog_route("classify"),
        "classify",
        "127.0.0.1:2",
        WorkerConfig(stop_grace_s=GRACE_S),
    )
    stop = threading.Event()
    stop.set()
    producer = InstantProducer()
    never_acknowledged: Future[None] = Future()
    started = time.monotonic()
    with pytest.raises(BatchAbandoned, match="left uncommitted"):
        worker._wait_delivered([never_acknowledged], producer, stop, IdleConsumer())
    waited = time.monotonic() - started
    assert GRACE_S <= waited < GRACE_S + 5
    assert producer.polls > 1
