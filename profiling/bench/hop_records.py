"""What every broker hop benchmark shares (`bench.kafka`, `bench.redis_hop`): the records it
sends — synthetic JPEGs of a chosen size, addressed to one bench stage, so Kafka and Redis
Streams carry the same bytes — and the measurement itself, so both report the same figures.

`measure_hop`: one message at a time, each received before the next is sent (the warm-up first,
then ``latency_messages``), timing the hop from the send stamp to the receive and the broker's
acknowledgement alone; then ``throughput_messages`` back to back, from the first send to the last
receive.

The warm-up (`warm_up`) runs until the hop is steady, not for a fixed count: a KRaft broker's JIT
compiles its code paths over thousands of records, a follower's later than a leader's (a fresh
3-broker cluster, 150 KB records, p50 per 200: 11.0, 7.9, 5.7, 4.4, 3.6 … 2.6 after 2,000 … 2.1
ms after 5,000), so a count that suits one broker measures three half-compiled."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from cvserve.broker.producer import image_message
from cvserve.broker.schema import Message, Record
from cvserve.broker.topics import Topics
from cvserve.preprocess.synthetic import synthetic_image

BENCH_TOPICS = Topics("bench")
BENCH_STAGE = "hop"
BENCH_IN = BENCH_TOPICS.stage_in(BENCH_STAGE)  # the topic or stream every hop bench sends to
SEND_HOP = "bench.send"
WARMUP_WINDOW = 200  # messages per warm-up window: its p50 is what `steady` compares
WARMUP_MAX_MESSAGES = 10_000  # the warm-up's bound when the hop never settles
STEADY_WINDOWS = 5  # windows in a row that must not beat the best before them ...
STEADY_TOLERANCE = 0.05  # ... by more than this fraction,
STEADY_BAND = 0.25  # ... and whose median is within this fraction above the best such run


@dataclass(frozen=True)
class HopSettings:
    """What one hop measurement sends, on any broker: JPEGs of about ``size_kb`` KB; a warm-up
    from ``warmup_messages`` until steady, at most ``warmup_max_messages`` (0 and 0: none);
    ``latency_messages`` one at a time; ``throughput_messages`` back to back."""

    size_kb: int = 150
    latency_messages: int = 300
    throughput_messages: int = 1000
    warmup_messages: int = 500
    warmup_max_messages: int = WARMUP_MAX_MESSAGES

    def warmed(self) -> HopSettings:
        """The same without a warm-up (a later round on a broker already warm)."""
        return dataclasses.replace(self, warmup_messages=0, warmup_max_messages=0)


DEFAULT_HOP = HopSettings()


def jpeg_near(target_bytes: int, seed: int) -> bytes:
    """A synthetic 4:3 JPEG within a few percent of ``target_bytes``."""
    width = 800
    image = synthetic_image(width, width * 3 // 4, seed)
    for _ in range(3):  # encoded size grows about linearly with the pixel count
        width = max(16, round(width * math.sqrt(target_bytes / len(image))))
        image = synthetic_image(width, width * 3 // 4, seed)
    return image


def bench_images(size_kb: int) -> list[bytes]:
    """The four JPEGs of about ``size_kb`` KB a hop benchmark sends in turn."""
    return [jpeg_near(size_kb * 1000, seed) for seed in range(4)]


def bench_message(images: list[bytes], n: int) -> Message:
    """The ``n``-th message of a run (``images`` in turn), stamped `SEND_HOP` now."""
    message = image_message(images[n % len(images)], BENCH_TOPICS.pipeline, BENCH_STAGE)
    return message.with_hop(SEND_HOP)


def send_ns(message: Message) -> int:
    """When the bench stamped the message, just before sending it (wall clock)."""
    return next(h.t_ns for h in reversed(message.trace.hops) if h.label == SEND_HOP)


@dataclass(frozen=True)
class Received:
    """One bench message as the receiver saw it: when it arrived and when it was sent (wall
    clock ns), and its value's size. Not the message: a warm-up of up to 10,000 150 KB values
    would hold 1.5 GB."""

    at_ns: int
    sent_ns: int
    value_bytes: int


class HopReceiver(threading.Thread):
    """Reads the bench stream or topic on a thread of its own (`run`, in each broker's
    subclass, until `stop` is set) and keeps a `Received` per message in arrival order."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.received: list[Received] = []
        self.arrived = threading.Condition()
        self.stop = threading.Event()

    def add(self, now_ns: int, messages: list[Message]) -> None:
        """Note ``messages``, all received at ``now_ns``; wakes `wait_for`."""
        with self.arrived:
            self.received += [Received(now_ns, send_ns(m), len(m.value)) for m in messages]
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise TimeoutError(f"{len(self.received)} of {count} messages after {timeout_s} s")


def _one_at_a_time(
    receiver: HopReceiver, send_and_wait_ack: Callable[[int], object], count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(hop ms, ack ms) of ``count`` messages, each received before the next is sent."""
    base = len(receiver.received)
    acks_ms = []
    for n in range(count):
        start = time.perf_counter()
        send_and_wait_ack(n)
        acks_ms.append((time.perf_counter() - start) * 1e3)
        receiver.wait_for(base + n + 1, 30)
    hops = receiver.received[base : base + count]
    return np.array([(r.at_ns - r.sent_ns) / 1e6 for r in hops]), np.array(acks_ms)


def steady(window_p50s_ms: list[float]) -> bool:
    """Whether the warm-up has settled: the last `STEADY_WINDOWS` windows all failed to beat the
    best p50 before them by more than `STEADY_TOLERANCE` (no longer getting faster: a one-window
    dip is noise, not compiled code), and their median is within `STEADY_BAND` of the lowest
    median of any `STEADY_WINDOWS` windows in a row (not stuck slower than the broker has been:
    a TLS cluster read 3.7 then 7–9 ms a window as the bench's page cache grew by GBs;
    medians, so that one lucky window sets no bar)."""
    k = STEADY_WINDOWS
    if len(window_p50s_ms) <= k:
        return False
    recent = window_p50s_ms[-k:]
    no_longer_faster = min(recent) >= (1 - STEADY_TOLERANCE) * min(window_p50s_ms[:-k])
    best_run = min(median(window_p50s_ms[i : i + k]) for i in range(len(window_p50s_ms) - k + 1))
    return no_longer_faster and median(recent) <= (1 + STEADY_BAND) * best_run


def warm_up(
    receiver: HopReceiver,
    send_and_wait_ack: Callable[[int], object],
    min_messages: int,
    max_messages: int,
) -> tuple[np.ndarray, list[float]]:
    """Hops one at a time, in windows of `WARMUP_WINDOW`: at least ``min_messages``, then until
    `steady` or ``max(min_messages, max_messages)`` in all. Returns every warm-up hop (ms) and
    each window's p50 (ms)."""
    limit = max(min_messages, max_messages)
    hops: list[np.ndarray] = []
    window_p50s: list[float] = []
    sent = 0
    while sent < limit and not (sent >= min_messages and steady(window_p50s)):
        window, _ = _one_at_a_time(receiver, send_and_wait_ack, min(WARMUP_WINDOW, limit - sent))
        hops.append(window)
        window_p50s.append(round(float(np.percentile(window, 50)), 3))
        sent += len(window)
    return (np.concatenate(hops) if hops else np.array([])), window_p50s


def measure_hop(
    receiver: HopReceiver,
    send_record: Callable[[Record], object],
    settings: HopSettings,
    send_burst: Callable[[list[Record]], object] | None = None,
) -> dict[str, Any]:
    """One broker hop measured (see the module): the row of figures every hop benchmark reports.

    ``send_record(record)`` sends a record to `BENCH_IN` and returns once the broker
    acknowledged it; ``send_burst(records)`` sends them back to back and returns once all are
    acknowledged (None: `send_record` each in turn). The records are `bench_message` n of
    `bench_images` of ``settings.size_kb``; ``receiver`` (not started) reads `BENCH_IN` here
    and is stopped on return."""
    images = bench_images(settings.size_kb)

    def send_and_wait_ack(n: int) -> object:
        return send_record(bench_message(images, n).to_record())

    receiver.start()
    try:
        return _measure(receiver, send_and_wait_ack, images, settings, send_burst)
    finally:
        receiver.stop.set()
        receiver.join(timeout=10)


def _measure(
    receiver: HopReceiver,
    send_and_wait_ack: Callable[[int], object],
    images: list[bytes],
    settings: HopSettings,
    send_burst: Callable[[list[Record]], object] | None,
) -> dict[str, Any]:
    warmup_ms, window_p50s = warm_up(
        receiver, send_and_wait_ack, settings.warmup_messages, settings.warmup_max_messages
    )
    latency_messages = settings.latency_messages
    throughput_messages = settings.throughput_messages
    latencies_ms, acks_ms = _one_at_a_time(receiver, send_and_wait_ack, latency_messages)

    base = len(receiver.received)
    start = time.time_ns()
    if send_burst is None:
        for n in range(throughput_messages):
            send_and_wait_ack(n)
    else:
        send_burst([bench_message(images, n).to_record() for n in range(throughput_messages)])
    acked_s = (time.time_ns() - start) / 1e9
    receiver.wait_for(base + throughput_messages, 120)
    burst = receiver.received[base : base + throughput_messages]
    elapsed_s = (max(r.at_ns for r in burst) - start) / 1e9
    total_bytes = sum(r.value_bytes for r in burst)
    return {
        "message_bytes_mean": int(np.mean([len(i) for i in images])),
        "warmup_messages": len(warmup_ms),
        "warmup_p50_ms": round(float(np.percentile(warmup_ms, 50)), 3) if len(warmup_ms) else None,
        "warmup_window_p50_ms": window_p50s,
        "warmup_steady": steady(window_p50s),
        "latency_messages": latency_messages,
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
        "max_ms": round(float(latencies_ms.max()), 3),
        "produce_ack_p50_ms": round(float(np.percentile(acks_ms, 50)), 3),
        "throughput_messages": throughput_messages,
        "msgs_per_s": round(throughput_messages / elapsed_s, 1),
        "mb_per_s": round(total_bytes / elapsed_s / 1e6, 1),
        "produce_acked_msgs_per_s": round(throughput_messages / acked_s, 1),
    }
