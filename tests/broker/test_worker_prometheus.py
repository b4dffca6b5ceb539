"""A real Prometheus scrapes a stage worker and Triton: the series say what the run did, and
every query of the shipped Grafana dashboard names a metric that exists."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from broker_testing import PIPELINE, small_jpegs, wait_until
from prometheus_testing import prometheus

from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import ResultReader
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.triton import TritonServer

pytestmark = [pytest.mark.kafka, pytest.mark.server]
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cvserve-pipeline.json"
IMAGES = 6


def dashboard_metric_names() -> set[str]:
    """Every metric a query of the dashboard reads (functions, labels and keywords left out)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    without_labels = [re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", e) for e in exprs]
    tokens = {t for e in without_labels for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e)}
    return {t for t in tokens if t.startswith(("cvserve_", "nv_"))}


def test_prometheus_scrapes_a_worker_and_triton(
    kafka: KafkaBroker,
    triton: TritonServer,
    triton_url: str,
    start_worker,
    namespace: str,
    tmp_path: Path,
) -> None:
    worker = start_worker(triton_url)
    address = worker.wait_stats(
        lambda s: bool(s.metrics_address), 60, "metrics served"
    ).metrics_address
    assert address.startswith("127.0.0.1:")  # loopback by default
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        ids = producer.submit(small_jpegs(IMAGES, first_seed=4000))
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        reader.collect(ids, timeout_s=180)
    with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as health:
        assert health.status == 200  # joined its group, Triton answers

    triton_metrics = urlsplit(triton.metrics_url).netloc
    with prometheus(tmp_path / "prometheus", {"worker": address, "triton": triton_metrics}) as prom:
        stage = f'pipeline="{PIPELINE}",stage="{PIPELINE}"'

        def scraped(expr: str, wanted: float) -> bool:
            values = [float(r["value"][1]) for r in prom.query(expr)]
            return values == [wanted]

        # The worker's counters and histograms, as the run left them.
        for expr in (
            f"cvserve_worker_consumed_total{{{stage}}}",
            f"cvserve_worker_results_total{{{stage}}}",
            f"cvserve_stage_latency_seconds_count{{{stage}}}",
            f"cvserve_triton_call_seconds_count{{{stage}}}",
        ):
            wait_until(lambda e=expr: scraped(e, IMAGES), 60, f"{expr} == {IMAGES} in Prometheus")
        assert scraped(f"cvserve_worker_dead_lettered_total{{{stage}}}", 0)
        assert scraped(f"sum(cvserve_worker_partition_lag{{{stage}}})", 0)  # all consumed
        buckets = f"cvserve_stage_latency_seconds_bucket{{{stage}}}"
        p99 = prom.query(f"histogram_quantile(0.99, sum by (le) ({buckets}))")
        assert 0 < float(p99[0]["value"][1]) < 180
        # Triton's own series: the ensemble the worker called counted the same requests.
        # Each target is scraped on its own schedule: wait for Triton's, as for the worker's.
        ensemble = f'nv_inference_request_success{{model="{PIPELINE}"}}'

        def triton_counted() -> bool:
            values = [float(r["value"][1]) for r in prom.query(ensemble)]
            return bool(values) and values[0] >= IMAGES

        wait_until(triton_counted, 60, f"{ensemble} >= {IMAGES} in Prometheus", prom.scrape_errors)
        assert prom.targets_up() == {"worker": "up", "triton": "up"}

        missing = dashboard_metric_names() - prom.metric_names()
        assert not missing, f"dashboard queries name metrics nobody serves: {sorted(missing)}"


def test_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        assert panel["datasource"]["type"] == "prometheus"
    names = dashboard_metric_names()
    assert {"cvserve_worker_partition_lag", "cvserve_stage_latency_seconds_bucket"} <= names
    assert any(name.startswith("nv_inference") for name in names)
