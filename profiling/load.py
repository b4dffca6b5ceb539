"""Load: closed loop (N clients back to back) and open loop (a fixed rate), latency recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cvserve.models.client import PipelineClient
from cvserve.pipelines.spec import PipelineSpec

Sender = Callable[[int], object]


@dataclass(frozen=True)
class LoadResult:
    """Latencies (seconds) of the requests that completed, errors, and the wall time."""

    concurrency: int
    latencies_s: tuple[float, ...]
    errors: int
    wall_s: float
    images_per_request: int = 1

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Images per second."""
        return self.requests * self.images_per_request / self.wall_s if self.wall_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    def summary(self) -> dict[str, float | int]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "images_per_s": round(self.throughput, 2),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p90_ms": round(self.percentile_ms(90), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "mean_ms": round(float(np.mean(self.latencies_s)) * 1e3, 2)
            if self.latencies_s
            else 0.0,
        }


def close_senders(senders: Sequence[Sender]) -> None:
    """Close each sender's connection (a sender without one has no ``close``)."""
    for sender in senders:
        close = getattr(sender, "close", None)
        if close:
            close()


def closed_loop(
    make_sender: Callable[[], Sender],
    concurrency: int,
    duration_s: float | None = None,
    requests_per_client: int | None = None,
    images_per_request: int = 1,
) -> LoadResult:
    """Run ``concurrency`` threads; each gets its own sender from ``make_sender`` (one connection
    each) and calls ``sender(i)`` until ``duration_s`` passes or it sent ``requests_per_client``."""
    if duration_s is None and requests_per_client is None:
        raise ValueError("give duration_s or requests_per_client")
    senders = [make_sender() for _ in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_barrier = threading.Barrier(concurrency + 1)
    deadline: list[float] = [0.0]

    def worker(slot: int) -> None:
        send = senders[slot]
        start_barrier.wait()
        i = 0
        while (requests_per_client is None or i < requests_per_client) and (
            duration_s is None or time.perf_counter() < deadline[0]
        ):
            t0 = time.perf_counter()
            try:
                send(i)
            except Exception:
                errors[slot] += 1
            else:
                latencies[slot].append(time.perf_counter() - t0)
            i += 1

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(concurrency)]
    for thread in threads:
        thread.start()
    t_start = time.perf_counter()
    deadline[0] = t_start + (duration_s or 0.0)
    start_barrier.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t_start
    close_senders(senders)
    return LoadResult(
        concurrency=concurrency,
        latencies_s=tuple(x for per in latencies for x in per),
        errors=sum(errors),
        wall_s=wall,
        images_per_request=images_per_request,
    )


def image_senders(url: str, spec: PipelineSpec, images: Sequence[bytes]) -> Callable[[], Sender]:
    """A sender factory for `closed_loop`: each sender has its own gRPC connection and sends
    request ``i`` as one image, ``images[i % len(images)]``."""

    def make_sender() -> Sender:
        client = PipelineClient(url, spec)

        def send(request: int) -> None:
            client.infer([images[request % len(images)]])

        send.close = client.close  # type: ignore[attr-defined]
        return send

    return make_sender


def warm_up(make_sender: Callable[[], Sender], requests: int) -> None:
    """Send ``requests`` unmeasured requests on one connection."""
    send = make_sender()
    for n in range(requests):
        send(n)
    close_senders([send])


def open_loop(
    make_sender: Callable[[], Sender], rate: float, duration_s: float, max_in_flight: int = 32
) -> LoadResult:
    """Send requests at ``rate`` per second for ``duration_s``, on up to ``max_in_flight``
    connections; a request's latency runs from when it was due, so time spent waiting for a
    free connection counts (the server fell behind). ``wall_s`` ends with the last answer."""
    senders = [make_sender() for _ in range(max_in_flight)]
    free: list[Sender] = list(senders)
    lock = threading.Condition()
    latencies: list[float] = []
    errors = [0]
    threads: list[threading.Thread] = []

    def one(send: Sender, i: int, due: float) -> None:
        try:
            send(i)
        except Exception:
            errors[0] += 1
        else:
            latencies.append(time.perf_counter() - due)
        with lock:
            free.append(send)
            lock.notify()

    start = time.perf_counter()
    total = int(rate * duration_s)
    for i in range(total):
        due = start + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))  # pacing the schedule, not a readiness wait
        with lock:
            while not free:
                lock.wait()
            send = free.pop()
        thread = threading.Thread(target=one, args=(send, i, due), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    close_senders(senders)
    return LoadResult(max_in_flight, tuple(latencies), errors[0], wall)
