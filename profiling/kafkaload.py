"""Load over Kafka: closed loop (``concurrency`` requests in flight) or open loop (``rate``
images/s on schedule), each request an image submitted to a pipeline's first stage and complete
once all its results are read back.

One thread does it all, so nothing but the broker and the workers runs between a submit and the
read of its results: it tops the requests in flight up to ``concurrency`` (reads the image file —
a ``read`` span — then makes, serializes and hands the record to the producer — ``serialize``),
polls the results topic, and completes a request when `broker.results.is_complete` says so. A
request's `Trace` is begun on this process's monotonic clock before the read; its results keep
the hops every component stamped (wall clock), which `profiling.kafkatrace` turns into spans.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cvserve.broker.producer import ImageProducer, MessageTooLarge
from cvserve.broker.results import ResultReader, is_complete
from cvserve.broker.routes import Route
from cvserve.broker.schema import Message
from cvserve.preprocess.spec import PreprocessError
from cvserve.profiling.trace import Trace

HANDED_OFF = "handed_off"  # trace mark: the record is the producer's (the transit starts)


@dataclass
class BrokerRequest:
    """One submitted image: its trace (client spans so far) and its unique results."""

    trace: Trace
    results: list[Message] = field(default_factory=list)
    completed_ns: int = 0  # monotonic, when the poll that completed it returned

    @property
    def crops(self) -> int:
        return sum(m.crop is not None for m in self.results)


@dataclass(frozen=True)
class BrokerLoad:
    """The requests that completed (in completion order) and what did not."""

    requests: list[BrokerRequest]
    incomplete: int  # still missing results when the drain deadline passed
    errors: int  # refused at submit (too large, not an image)
    wall_s: float  # first submit → last completion

    @property
    def images_per_s(self) -> float:
        return len(self.requests) / self.wall_s if self.wall_s else 0.0

    @property
    def crops_per_s(self) -> float:
        return sum(r.crops for r in self.requests) / self.wall_s if self.wall_s else 0.0


class BrokerClient:
    """The producer and result reader of one pipeline in one namespace (one per run: topics are
    created and partitions assigned once)."""

    def __init__(self, bootstrap: str, pipeline: Route | str, namespace: str) -> None:
        self.producer = ImageProducer(bootstrap, pipeline, namespace)
        self.reader = ResultReader(bootstrap, pipeline, namespace, keep=False)
        self.pending: dict[str, BrokerRequest] = {}
        self.late = 0  # results of requests no longer waited for

    def submit(self, path: Path) -> BrokerRequest:
        """Send the image at ``path``; raises `MessageTooLarge` / `PreprocessError` / `OSError`."""
        trace = Trace("").begin()
        with trace.span("read"):
            data = path.read_bytes()
        with trace.span("serialize"):
            message = self.producer.message(data)
            record = self.producer.record(message)
        # Before the send: a worker may fetch the record before `send_record` returns (the
        # client thread can lose its core meanwhile), and no hop is taken as earlier than this.
        trace.marks[HANDED_OFF] = time.monotonic_ns()
        self.producer.send_record(record)
        trace.request_id, trace.trace_id = message.request_id, message.trace.trace_id
        trace.attributes["request_bytes"] = len(data)
        request = BrokerRequest(trace)
        self.pending[message.request_id] = request
        return request

    def poll(self, timeout_s: float) -> list[BrokerRequest]:
        """Read what arrived within ``timeout_s``; returns the requests it completed."""
        done = []
        for message in self.reader.poll(timeout_s):
            request = self.pending.get(message.request_id)
            if request is None:
                self.late += 1
                continue
            request.results.append(message)
            if is_complete(request.results):
                request.completed_ns = time.monotonic_ns()
                done.append(self.pending.pop(message.request_id))
        return done

    def close(self) -> None:
        self.producer.close()
        self.reader.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_loop_over_broker(
    client: BrokerClient,
    images: Sequence[Path],
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    stall_timeout_s: float = 120.0,
    poll_s: float = 0.02,
) -> BrokerLoad:
    """Keep ``concurrency`` requests in flight (image ``i % len(images)`` for the i-th) until
    ``duration_s`` passed or ``requests`` were sent, then wait for those in flight; give up when
    nothing completed for ``stall_timeout_s`` (what is left counts as incomplete)."""
    if duration_s is None and requests is None:
        raise ValueError("give duration_s or requests")
    return _drive(
        client,
        images,
        lambda _now_ns, _sent: len(client.pending) < concurrency,
        duration_s,
        requests,
        stall_timeout_s,
        poll_s,
    )


def open_loop_over_broker(
    client: BrokerClient,
    images: Sequence[Path],
    rate: float,
    duration_s: float,
    stall_timeout_s: float = 120.0,
    poll_s: float = 0.002,
) -> BrokerLoad:
    """Submit ``rate`` images/s on schedule (the i-th at ``i / rate`` s, whatever is in flight)
    for ``duration_s``, then wait for those in flight as `closed_loop_over_broker` does."""
    interval_ns = 1e9 / rate
    start_ns = time.monotonic_ns()
    return _drive(
        client,
        images,
        lambda now_ns, sent: now_ns - start_ns >= sent * interval_ns,
        duration_s,
        None,
        stall_timeout_s,
        min(poll_s, interval_ns / 4e9),
        start_ns,
    )


def _drive(
    client: BrokerClient,
    images: Sequence[Path],
    may_send: Callable[[int, int], bool],
    duration_s: float | None,
    requests: int | None,
    stall_timeout_s: float,
    poll_s: float,
    start_ns: int | None = None,
) -> BrokerLoad:
    """Submit while ``may_send(now_ns, sent)`` and sending time (or requests) lasts, poll
    results between; the load once nothing is pending or nothing completed for the stall time."""
    start_ns = start_ns or time.monotonic_ns()
    deadline_ns = start_ns + int(duration_s * 1e9) if duration_s is not None else None
    stall_ns = int(stall_timeout_s * 1e9)
    progress_ns = start_ns
    sent = errors = 0
    completed: list[BrokerRequest] = []

    def sending(now_ns: int) -> bool:
        in_time = deadline_ns is None or now_ns < deadline_ns
        return in_time and (requests is None or sent < requests)

    while True:
        now_ns = time.monotonic_ns()
        while sending(now_ns) and may_send(now_ns, sent):
            try:
                client.submit(images[sent % len(images)])
            except (MessageTooLarge, PreprocessError, OSError):
                errors += 1
            sent += 1
        if not sending(now_ns) and not client.pending:
            break
        if now_ns - progress_ns > stall_ns:
            break
        done = client.poll(poll_s)
        if done:
            completed += done
            progress_ns = time.monotonic_ns()
    incomplete = len(client.pending)
    client.pending.clear()
    last_ns = max((r.completed_ns for r in completed), default=start_ns)
    return BrokerLoad(completed, incomplete, errors, (last_ns - start_ns) / 1e9)


def warm_up(client: BrokerClient, images: Sequence[Path], requests: int, timeout_s: float) -> None:
    """Send ``requests`` images one at a time and wait for each (consumer groups joined,
    connections open); `TimeoutError` if one does not complete within ``timeout_s``."""
    load = closed_loop_over_broker(
        client, images, concurrency=1, requests=requests, stall_timeout_s=timeout_s
    )
    if load.incomplete or len(load.requests) < requests:
        raise TimeoutError(
            f"warm-up: {len(load.requests)} of {requests} request(s) complete after "
            f"{timeout_s:.0f} s (are the stage workers and Triton up?)"
        )
