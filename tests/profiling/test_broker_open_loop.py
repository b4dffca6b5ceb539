"""The open-loop load over a broker: requests leave on schedule whatever is in flight (a slow
pipeline does not slow the sender down), and every one is waited for."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from cvserve.profiling.kafkaload import BrokerRequest, open_loop_over_broker
from cvserve.profiling.trace import Trace


class SlowPipeline:
    """Stands in for `BrokerClient`: each request completes ``service_s`` after its submit."""

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s
        self.pending: dict[str, BrokerRequest] = {}
        self.submitted_ns: list[int] = []

    def submit(self, path: Path) -> BrokerRequest:
        request = BrokerRequest(Trace(str(len(self.submitted_ns))).begin())
        self.submitted_ns.append(request.trace.start_ns)
        self.pending[request.trace.request_id] = request
        return request

    def poll(self, timeout_s: float) -> list[BrokerRequest]:
        time.sleep(timeout_s)  # a broker poll: waits its timeout
        now = time.monotonic_ns()
        done = [r for r in self.pending.values() if now - r.trace.start_ns >= self.service_s * 1e9]
        for r in done:
            r.completed_ns = now
            del self.pending[r.trace.request_id]
        return done


def test_requests_leave_on_schedule_while_many_are_in_flight() -> None:
    client = SlowPipeline(service_s=0.3)  # 0.3 s each at 50/s: ~15 in flight
    load = open_loop_over_broker(client, [Path("x.jpg")], rate=50.0, duration_s=1.0)
    sent = len(client.submitted_ns)
    assert 45 <= sent <= 51  # 50/s for 1 s, none held back by the 15 in flight
    gaps_ms = [(b - a) / 1e6 for a, b in itertools.pairwise(client.submitted_ns)]
    assert max(gaps_ms) < 100  # a 20 ms schedule, never waiting for a 300 ms completion
    assert len(load.requests) == sent and load.incomplete == 0
    assert 1.2 <= load.wall_s < 2.5  # the last one completes 0.3 s after the last submit
