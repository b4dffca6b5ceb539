"""One managed-process lifecycle: own session, readiness with a deadline, log quoted, stop by pid
then process group; and the deadline poll everything waits with."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cvserve.deploy.process import ManagedProcess, ProcessStartError, pid_alive, poll_until


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_poll_until_returns_the_first_truthy_value_and_names_what_timed_out() -> None:
    calls = iter([None, 0, "ready"])
    assert poll_until(lambda: next(calls), 5.0, interval_s=0) == "ready"
    with pytest.raises(TimeoutError, match="the queue draining: not after 0.05 s"):
        poll_until(lambda: False, 0.05, interval_s=0.01, what="the queue draining")


def test_a_process_that_exits_before_ready_fails_quoting_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "toy", python("print('bad config: port missing'); raise SystemExit(3)"), tmp_path / "log"
    ).start()
    with pytest.raises(ProcessStartError, match="toy exited with code 3") as error:
        process.wait_ready(lambda: False, 30.0, interval_s=0.01)
    assert "bad config: port missing" in str(error.value)


def test_a_fatal_log_line_fails_at_once_and_the_deadline_says_not_ready(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = ManagedProcess("toy", python("import time; time.sleep(60)"), log).start()
    try:
        started = time.monotonic()
        with pytest.raises(ProcessStartError, match="toy cannot get ready: stub died"):
            process.wait_ready(lambda: False, 30.0, fatal=lambda: "stub died", interval_s=0.01)
        assert time.monotonic() - started < 10
        with pytest.raises(ProcessStartError, match="toy not ready after 0 s"):
            process.wait_ready(lambda: False, 0.0)
    finally:
        process.stop(timeout_s=5)


def test_stop_kills_the_process_group_children_included(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The parent ignores SIGTERM and leaves a child behind: both must go.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    process = ManagedProcess("toy", python(code), tmp_path / "log").start()
    parent = process.pid
    child = int(poll_until(lambda: pid_file.exists() and pid_file.read_text(), 30.0))
    process.stop(timeout_s=0.5)
    assert poll_until(lambda: not pid_alive(parent) and not pid_alive(child), 10.0)
    assert process.process is None and not process.running()


def test_kafka_home_does_not_depend_on_where_the_package_is_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cvserve.deploy import kafka

    monkeypatch.delenv(kafka.KAFKA_HOME_ENV, raising=False)
    home = kafka.kafka_home()
    # A non-editable install puts the module under site-packages: the jars are still found.
    monkeypatch.setattr(kafka, "__file__", str(tmp_path / "site-packages/cvserve/deploy/kafka.py"))
    assert kafka.kafka_home() == home == Path(sys.prefix) / "share" / "cvserve" / "kafka"
    monkeypatch.setenv(kafka.KAFKA_HOME_ENV, str(tmp_path))
    assert kafka.kafka_home() == tmp_path
