"""`StageLoop`: what every stage worker holds whatever its transport — the stage's step
(`broker.stage_step.StageStep`), its counters and their file, its metrics endpoint, its Triton
caller and call pool. A transport's worker (`broker.worker.StageWorker` over Kafka,
`broker.redis_worker.RedisStageWorker` over Redis Streams) subclasses it with how records arrive,
how outputs leave and how a batch is committed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

from cvserve.broker.ensemble import EnsembleCaller
from cvserve.broker.routes import Route
from cvserve.broker.stage_step import BatchAbandoned, StageStep
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics, default_namespace
from cvserve.broker.worker_config import WorkerConfig
from cvserve.broker.worker_metrics import DEFAULT_ADDRESS as DEFAULT_METRICS_ADDRESS
from cvserve.broker.worker_metrics import WorkerMetrics
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits

log = logging.getLogger(__name__)


class LoopOptions(TypedDict, total=False):
    """`StageLoop`'s optional arguments, as a transport's worker passes them on."""

    namespace: str | None
    stats_path: Path | None
    limits: MessageLimits
    metrics_address: str | None


class StageLoop:
    """A worker of stage ``stage`` of ``route``: the group it joins, the step it runs, what it
    counts (``stats``, rewritten to ``stats_path`` when given) and serves (``metrics_address``,
    None: no endpoint)."""

    def __init__(
        self,
        route: Route,
        stage: str,
        triton_url: str,
        config: WorkerConfig | None = None,
        namespace: str | None = None,
        stats_path: Path | None = None,
        limits: MessageLimits = LIMITS,
        metrics_address: str | None = DEFAULT_METRICS_ADDRESS,
    ) -> None:
        self.route = route
        self.stage = route.stage(stage)
        self.config = config or WorkerConfig()
        self.limits = limits
        self.topics = Topics(route.pipeline, namespace or default_namespace())
        self.topic = self.topics.stage_in(self.stage.name)  # a Redis stream is named alike
        self.group = self.topics.group(self.stage.name)
        self.triton_url = triton_url
        self.stats_path = stats_path
        self.stats = WorkerStats(route.pipeline, self.stage.name, self.group)
        # /metrics, /healthz, /livez (`broker.worker_metrics`); None: not served.
        self.metrics_address = metrics_address
        self.metrics: WorkerMetrics | None = None
        # What each record becomes (check, infer, emit, dead letter): no transport inside.
        self.step = StageStep(
            route, stage, self.topics, self.stats, self.config, limits, self._write_stats
        )

    @contextmanager
    def serving(
        self, close_transport: Callable[[], None]
    ) -> Iterator[tuple[EnsembleCaller, ThreadPoolExecutor]]:
        """The Triton caller and call pool of one `run`, the metrics endpoint served meanwhile.
        On exit (a stop, `BatchAbandoned`, an error): state ``stopped`` written, the pool's calls
        cancelled, ``close_transport()`` called, the caller and the endpoint closed."""
        caller = EnsembleCaller(self.triton_url, self.stage.ensemble, self.config.call_timeout_s)
        self._start_metrics(caller)
        pool = ThreadPoolExecutor(self.config.max_in_flight, thread_name_prefix="triton")
        try:
            yield caller, pool
        except BatchAbandoned as exc:
            log.warning("worker %s: %s", self.stats.pid, exc)
        finally:
            self.stats.state = "stopped"
            self.stats.in_flight = 0
            self._write_stats()
            pool.shutdown(wait=True, cancel_futures=True)
            close_transport()
            caller.close()
            self._stop_metrics()

    def run(self, stop: threading.Event) -> WorkerStats:
        """Work until ``stop`` is set; returns the final counters."""
        raise NotImplementedError

    def _start_metrics(self, caller: EnsembleCaller) -> None:
        """Serve this worker's endpoint (unless ``metrics_address`` is None); its address goes
        to the stats file and the log."""
        if self.metrics_address is None:
            return
        self.metrics = WorkerMetrics(self.stats, triton_ready=caller.ready)
        self.stats.metrics_address = self.metrics.serve(self.metrics_address)
        self.step.metrics = self.metrics
        log.info(
            "worker %s: metrics on http://%s/metrics", self.stats.pid, self.stats.metrics_address
        )

    def _stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = self.step.metrics = None

    def _beat(self) -> None:
        if self.metrics is not None:
            self.metrics.beat()

    def _write_stats(self) -> None:
        if self.stats_path is not None:
            self.stats.write(self.stats_path)
