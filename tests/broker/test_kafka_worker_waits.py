"""While a batch's Triton calls are out, a worker blocks between keep-alive polls instead of
spinning through them (no broker, no Triton: a caller whose calls end at different times)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from broker_testing import small_jpegs

from cvserve.broker.producer import image_message
from cvserve.broker.schema import Record
from cvserve.broker.worker import _KEEP_ALIVE_S, StageWorker, _Work
from cvserve.pipelines.app.pipeline_args import catalog_route

SLOW_S = 3 * _KEEP_ALIVE_S


class CountingConsumer:
    polls = 0

    def poll(self, timeout: float) -> None:
        self.polls += 1
        return None


class UnevenCaller:
    """The first call answers at once, the second after ``SLOW_S``."""

    def infer(self, value: bytes, call_id: str) -> dict[str, np.ndarray]:
        if call_id.endswith("slow"):
            time.sleep(SLOW_S)
        return {"OUT": np.zeros(1, np.float32)}


def test_a_batch_with_one_slow_call_polls_about_once_per_keep_alive_period() -> None:
    worker = StageWorker("127.0.0.1:1", catalog_route("classify"), "classify", "127.0.0.1:2")
    work = []
    for n, (image, name) in enumerate(zip(small_jpegs(2), ("fast", "slow"), strict=True)):
        message = image_message(image, "classify", "classify")
        message = replace(message, request_id=name)
        work.append(_Work(("in", 0), n, Record(None, image, []), 0, message=message))
    consumer = CountingConsumer()
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        worker._infer(work, UnevenCaller(), pool, threading.Event(), consumer)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert all(item.outputs is not None for item in work)
    # One poll per wake-up: a finished call, or a keep-alive period passed (spinning: thousands).
    assert consumer.polls <= took / _KEEP_ALIVE_S + 3, (consumer.polls, took)
