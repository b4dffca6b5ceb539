"""A real Prometheus (Debian's ``prometheus``) for tests: a generated config scraping the targets
given every 2 s, started in its own folder, stopped by pid; its HTTP API queried."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from broker_testing import require_tool

from cvserve.deploy.ports import free_port
from cvserve.deploy.process import ManagedProcess


class Prometheus:
    """The HTTP API of a running server at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr``: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        return self.get("/api/v1/query", query=expr)["result"]

    def metric_names(self) -> set[str]:
        return set(self.get("/api/v1/label/__name__/values"))

    def targets_up(self) -> dict[str, str]:
        """Scrape job → health of its target (``up`` once scraped)."""
        return {
            t["labels"]["job"]: t["health"] for t in self.get("/api/v1/targets")["activeTargets"]
        }

    def scrape_errors(self) -> dict[str, str]:
        """Scrape job → the last scrape's error (``""`` when it succeeded), for failure messages."""
        return {
            t["labels"]["job"]: t.get("lastError", "")
            for t in self.get("/api/v1/targets")["activeTargets"]
        }


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextmanager
def prometheus(folder: Path, targets: Mapping[str, str]) -> Iterator[Prometheus]:
    """Prometheus scraping each ``job → host:port`` of ``targets`` (``/metrics``) every 2 s.

    The scrape timeout is the whole interval: a loaded 2-core CI machine answers Triton's
    ``/metrics`` (summaries included) in well over the default's share of it."""
    binary = require_tool("prometheus", "apt-get install prometheus")
    config = {
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    command = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={address}",
    ]
    managed = ManagedProcess("prometheus", command, folder / "prometheus.log").start()
    try:
        managed.wait_ready(lambda: ready(f"http://{address}"), timeout_s=60)
        yield Prometheus(f"http://{address}")
    finally:
        managed.stop(timeout_s=10)
