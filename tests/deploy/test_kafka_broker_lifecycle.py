"""`cvserve kafka start|status|stop` on a real broker, restart on the same data, clear failures.

These run before the session broker starts (file order), so one Kafka runs at a time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cvserve.deploy.kafka import KafkaBroker, KafkaStartError, running_pid
from cvserve.deploy.ports import free_port
from cvserve.deploy.process import pid_alive

pytestmark = pytest.mark.kafka


def cvserve_kafka(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "kafka", *args],
        capture_output=True,
        text=True,
        timeout=150,
    )


def test_cli_starts_detached_reports_status_stops_and_restarts_on_the_same_data(
    tmp_path: Path,
) -> None:
    state = str(tmp_path / "broker")
    try:
        started = cvserve_kafka("start", "--state-dir", state)
        assert started.returncode == 0, started.stdout + started.stderr
        first = KafkaBroker.read_state(Path(state))
        assert first is not None and first["pid"] and running_pid(Path(state)) == first["pid"]

        status = cvserve_kafka("status", "--state-dir", state)
        assert status.returncode == 0 and status.stdout.startswith("ready"), status.stdout

        again = cvserve_kafka("start", "--state-dir", state)
        assert "already running" in again.stdout

        stopped = cvserve_kafka("stop", "--state-dir", state)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not pid_alive(int(first["pid"]))
        assert cvserve_kafka("status", "--state-dir", state).returncode == 1

        restarted = cvserve_kafka("start", "--state-dir", state)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        second = KafkaBroker.read_state(Path(state))
        assert second is not None and second["pid"] != first["pid"]
        assert second["bootstrap"] == first["bootstrap"]  # clients keep their address
        log = (Path(state) / "broker.log").read_text()
        assert log.count("==== cvserve: starting broker") == 2
        assert log.count("==== cvserve: formatting") == 1  # on the first start only
    finally:
        cvserve_kafka("stop", "--state-dir", state)
    assert running_pid(Path(state)) is None


def test_broker_that_dies_at_start_fails_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken, controller = busy.getsockname()[1], free_port()
        broker = KafkaBroker(
            tmp_path,
            controller_port=controller,
            # The client listener on a port someone else holds: the JVM cannot bind and exits.
            extra_properties={
                "listeners": f"PLAINTEXT://127.0.0.1:{taken},CONTROLLER://127.0.0.1:{controller}"
            },
        )
        with pytest.raises(KafkaStartError, match="exited with code") as failure:
            broker.start(timeout_s=90)
    assert "Fatal error during broker startup" in str(failure.value)
    assert "last lines:" in str(failure.value) and str(broker.log_path) in str(failure.value)
    assert broker.process is None


def test_missing_jars_name_the_setup_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CVSERVE_KAFKA_HOME", str(tmp_path))
    with pytest.raises(KafkaStartError, match=r"run \./deploy/setup\.sh"):
        KafkaBroker(tmp_path / "broker").start()
