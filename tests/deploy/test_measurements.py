"""The per-machine measurement store: round trip, one file per machine, concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from cvserve.deploy import measurements


@pytest.fixture(autouse=True)
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(measurements.STORE_ENV, str(tmp_path))
    return tmp_path


def test_a_value_comes_back_and_is_replaced() -> None:
    assert measurements.get("engines", "k") is None
    path = measurements.put("engines", "k", {"a": [1, 2]})
    assert measurements.get("engines", "k") == {"a": [1, 2]}
    measurements.put("engines", "k", 3)
    assert measurements.get("engines", "k") == 3 and path.exists()


def test_another_machine_reads_its_own_file(monkeypatch: pytest.MonkeyPatch) -> None:
    measurements.put("tuned", "k", 1)
    monkeypatch.setattr(measurements, "machine_key", lambda: {"cpu": "other", "cores": 64})
    assert measurements.get("tuned", "k") is None


def test_an_unreadable_store_is_measured_again(own_store: Path) -> None:
    measurements.store_file("engines").write_text("{not json")
    assert measurements.get("engines", "k") is None
    measurements.put("engines", "k", 1)
    assert measurements.get("engines", "k") == 1


def _write_many(prefix: str) -> None:
    for i in range(20):
        measurements.put("engines", f"{prefix}{i}", i)


def test_writers_in_several_processes_lose_nothing() -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(p,)) for p in "abc"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    for p in "abc":
        assert [measurements.get("engines", f"{p}{i}") for i in range(20)] == list(range(20))
