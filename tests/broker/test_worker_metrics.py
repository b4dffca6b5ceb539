"""A worker's HTTP endpoint without Kafka: counters read from its stats at scrape time, latency
histograms, readiness and liveness that say what is missing."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from cvserve.broker.stats import WorkerStats
from cvserve.broker.worker_metrics import WorkerMetrics


def get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_follow_the_stats_and_health_says_what_is_missing() -> None:
    stats = WorkerStats("classify", "classify", "cvserve.classify.classify")
    triton = {"ready": False}
    metrics = WorkerMetrics(stats, triton_ready=lambda: triton["ready"], stale_after_s=0.5)
    address = metrics.serve("127.0.0.1:0")
    try:
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        stats.consumed, stats.results, stats.in_flight = 7, 5, 2
        stats.lag = {"cvserve.classify.classify.in/3": 11}
        metrics.stage_latency.observe(0.02)
        metrics.triton_call.observe(0.004)
        status, text = get(address, "/metrics")
        assert status == 200
        got = samples(text)
        stage = (("pipeline", "classify"), ("stage", "classify"))
        assert got[("cvserve_worker_consumed_total", stage)] == 7
        assert got[("cvserve_worker_results_total", stage)] == 5
        assert got[("cvserve_worker_in_flight", stage)] == 2
        lag = (*stage, ("partition", "3"), ("topic", "cvserve.classify.classify.in"))
        assert got[("cvserve_worker_partition_lag", tuple(sorted(lag)))] == 11
        assert got[("cvserve_stage_latency_seconds_count", stage)] == 1
        assert got[("cvserve_triton_call_seconds_sum", stage)] == 0.004

        stats.results = 6  # read at scrape time
        assert samples(get(address, "/metrics")[1])[("cvserve_worker_results_total", stage)] == 6

        assert get(address, "/healthz") == (503, "consumer has not joined its group yet\n")
        metrics.joined = True
        assert get(address, "/healthz") == (503, "Triton not ready\n")
        triton["ready"] = True
        assert get(address, "/healthz") == (200, "ready\n")

        metrics.beat()
        assert get(address, "/livez")[0] == 200
        metrics.stale_after_s = 0.0  # any time since the last beat is too long now
        status, reason = get(address, "/livez")
        assert status == 503 and "idle" in reason
        assert get(address, "/nothing")[0] == 404
    finally:
        metrics.close()
