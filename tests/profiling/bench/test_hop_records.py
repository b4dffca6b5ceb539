"""The hop benchmarks' warm-up: until the hop is steady, bounded (no broker: scripted hops)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from cvserve.profiling.bench.hop_records import (
    STEADY_WINDOWS,
    WARMUP_WINDOW,
    HopReceiver,
    bench_message,
    jpeg_near,
    send_ns,
    steady,
    warm_up,
)


def test_steady_needs_windows_that_no_longer_beat_the_best() -> None:
    falling = [10.0, 8.0, 6.0, 5.0, 4.0, 3.5, 3.0, 2.6]
    assert not steady(falling)
    flat = [10.0, 3.0, 3.0, 3.1, 2.95, 3.05, 2.9]  # the last 5 within 5 % of the best before
    assert steady(flat)
    assert not steady(flat[:-1] + [2.7])  # the last window beat the best by 10 %
    assert not steady([3.0] * STEADY_WINDOWS)  # nothing before them to compare with
    regressed = [10.0, 5.0, 3.8, 3.7, 3.9, 3.6, 3.8, 8.2, 7.6, 7.3, 7.9, 8.0]  # slower than it was
    assert not steady(regressed)
    assert steady([*regressed, 3.9, 3.8, 4.0, 3.7, 3.9])  # back within the band of the best
    lucky = [0.8, 0.43, 0.43, 0.28, 0.39, 0.41, 0.42, 0.41, 0.43, 0.42]  # one window at 0.28
    assert steady(lucky)


class _Scripted(HopReceiver):
    """Receives each message the moment it is sent, stamped ``hop_ms(n)`` after its send."""

    def __init__(self, hop_ms: Callable[[int], float]) -> None:
        super().__init__()
        self.hop_ms = hop_ms
        self.sent = 0
        self.images = [jpeg_near(2_000, seed=0)]

    def send(self, n: int) -> None:
        message = bench_message(self.images, n)
        self.add(send_ns(message) + int(self.hop_ms(self.sent) * 1e6), [message])
        self.sent += 1


@pytest.mark.parametrize("cold_windows", [0, 3, 8])
def test_warm_up_runs_until_the_hop_settles(cold_windows: int) -> None:
    cold = cold_windows * WARMUP_WINDOW
    receiver = _Scripted(lambda i: 10.0 - 7.0 * i / cold if i < cold else 3.0)
    hops, window_p50s = warm_up(receiver, receiver.send, min_messages=1, max_messages=10**6)
    settled_after = cold_windows + 1 + STEADY_WINDOWS  # the first flat window is the best
    assert len(window_p50s) == settled_after and len(hops) == settled_after * WARMUP_WINDOW
    assert window_p50s[-1] == pytest.approx(3.0, abs=0.01) and steady(window_p50s)


def test_warm_up_stops_at_its_bound_and_sends_at_least_its_minimum() -> None:
    receiver = _Scripted(lambda i: 100.0 / (1 + i))  # never settles
    hops, window_p50s = warm_up(receiver, receiver.send, min_messages=0, max_messages=450)
    assert len(hops) == 450 and len(window_p50s) == 3  # 200 + 200 + 50
    flat = _Scripted(lambda i: 3.0)  # steady at once, but the minimum is sent
    hops, _ = warm_up(flat, flat.send, min_messages=1500, max_messages=0)
    assert len(hops) == 1500
    none = _Scripted(lambda i: 3.0)
    assert warm_up(none, none.send, 0, 0)[0].size == 0 and none.sent == 0


def test_scripted_hops_are_timed_from_the_send_stamp() -> None:
    receiver = _Scripted(lambda i: 4.0)
    start = time.time_ns()
    hops, _ = warm_up(receiver, receiver.send, min_messages=3, max_messages=3)
    assert hops.tolist() == pytest.approx([4.0] * 3, abs=1e-3)
    assert all(r.at_ns >= start and r.value_bytes > 1000 for r in receiver.received)
