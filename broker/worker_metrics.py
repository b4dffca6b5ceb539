"""A stage worker's own HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz``, ``/livez``.

- ``/metrics``: the worker's counters (`broker.metrics.WORKER_METRICS`, the names
  ``cvserve kafka lag --format prometheus`` prints), its lag per assigned partition, and two
  latency histograms per stage: ``cvserve_stage_latency_seconds`` (consumed → outputs
  acknowledged by the broker) and ``cvserve_triton_call_seconds`` (dispatched → answered).
  Counters are read from the worker's `WorkerStats` at scrape time, so the file, ``kafka lag``
  and Prometheus can never disagree.
- ``/healthz`` (readiness): 200 once the consumer joined its group (an assignment arrived, even
  an empty one: more workers than partitions is legal) and Triton answers ``is_server_ready``;
  503 naming what is missing otherwise.
- ``/livez`` (liveness): 200 while the worker's loop (or its keep-alive polling during a long
  batch) ran within ``stale_after_s``; 503 otherwise (a wedged worker is restarted).

Bound to 127.0.0.1 on a free port by default (several workers per machine); the address it got
is in the worker's stats file and its log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cvserve.broker.metrics import PREFIX, WORKER_METRICS
from cvserve.broker.stats import WorkerStats

DEFAULT_ADDRESS = "127.0.0.1:0"
# In a pod (one worker each): a fixed port on every interface, for probes and scrapes.
POD_PORT = 9464
METRICS_PATH = "/metrics"
READY_PATH = "/healthz"
LIVE_PATH = "/livez"
# Triton calls and whole hops of image models on CPU and GPU: 1 ms … 60 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _StatsCollector:
    """Yields the worker's counters and lag from its `WorkerStats` at each scrape."""

    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        labels = ["pipeline", "stage"]
        values = [stats.pipeline, stats.stage]
        for field, (kind, help_text) in WORKER_METRICS.items():
            name = f"{PREFIX}_worker_{field}"
            family: Metric
            if kind == "counter":  # the client library appends _total
                family = CounterMetricFamily(name, help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            family.add_metric(values, getattr(stats, field))
            yield family
        lag = GaugeMetricFamily(
            f"{PREFIX}_worker_partition_lag",
            "Records between this worker's position and the end of an assigned partition.",
            labels=[*labels, "topic", "partition"],
        )
        for key, behind in dict(stats.lag).items():
            topic, _, partition = key.rpartition("/")
            lag.add_metric([*values, topic, partition], behind)
        yield lag


class WorkerMetrics:
    """The registry, histograms and health state of one worker; `serve` starts the endpoint."""

    def __init__(
        self,
        stats: WorkerStats,
        triton_ready: Callable[[], bool] = lambda: True,
        stale_after_s: float = 60.0,
    ) -> None:
        self.stats = stats
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(stats))  # type: ignore[arg-type]
        labels = ("pipeline", "stage")
        self.stage_latency = Histogram(
            f"{PREFIX}_stage_latency_seconds",
            "Consumed from the stage's topic until every output was acknowledged by the broker.",
            labels,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        ).labels(stats.pipeline, stats.stage)
        self.triton_call = Histogram(
            f"{PREFIX}_triton_call_seconds",
            "One Triton ensemble call of the stage, dispatched until answered.",
            labels,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        ).labels(stats.pipeline, stats.stage)
        self.triton_ready = triton_ready
        self.stale_after_s = stale_after_s
        self.joined = False  # set by the consumer's first assignment
        self._beat = time.monotonic()
        self._server: ThreadingHTTPServer | None = None

    def beat(self) -> None:
        """The worker's loop (or keep-alive poll) ran now."""
        self._beat = time.monotonic()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def readiness(self) -> tuple[bool, str]:
        if not self.joined:
            return False, "consumer has not joined its group yet"
        try:
            ready = self.triton_ready()
        except Exception as exc:  # a health check reports, never raises
            return False, f"Triton not ready: {exc}"
        return (True, "ready") if ready else (False, "Triton not ready")

    def liveness(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._beat
        if idle > self.stale_after_s:
            return False, f"worker loop idle for {idle:.0f} s"
        return True, "alive"

    def serve(self, address: str = DEFAULT_ADDRESS) -> str:
        """Start the endpoint on ``address`` (``host:port``, port 0: a free one) in a daemon
        thread; returns the ``host:port`` it listens on."""
        host, _, port = address.rpartition(":")
        server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        return f"{bound_host}:{bound_port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it
            path = self.path.split("?", 1)[0]
            if path == METRICS_PATH:
                self._answer(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path in (READY_PATH, LIVE_PATH):
                ok, reason = metrics.readiness() if path == READY_PATH else metrics.liveness()
                self._answer(200 if ok else 503, f"{reason}\n".encode(), "text/plain")
            else:
                paths = f"{METRICS_PATH}, {READY_PATH}, {LIVE_PATH}\n"
                self._answer(404, paths.encode(), "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:  # scrapes every few seconds: not logged
            pass

    return Handler
