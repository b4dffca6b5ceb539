"""`cvserve kafka start --brokers 3 --secure` as a user runs it: three SASL/SCRAM-over-TLS nodes,
found by the other commands without flags; topics replicated three times; clients without
credentials, with a wrong password or without the CA refused with one line naming the cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvserve.deploy.kafka import kafka_libs
from cvserve.deploy.kafka_client_config import CLIENT_CONFIG_ENV, read_properties, write_properties
from cvserve.deploy.kafka_cluster import node_pids, read_cluster
from cvserve.deploy.process import pid_alive, poll_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def cvserve(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A ``cvserve`` command whose Kafka home (broker state) is ``home``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CVSERVE_KAFKA")}
    environ.update({"CVSERVE_KAFKA_HOME": str(home), **env})
    return subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=environ,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_secure_three_broker_cluster_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "libs").symlink_to(kafka_libs())  # the jars setup fetched; the state is this test's
    state = home / "broker"
    try:
        started = cvserve(home, "kafka", "start", "--brokers", "3", "--secure", "--heap-mb", "384")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "3 broker(s)" in started.stdout and "min.insync.replicas 2" in started.stdout
        cluster = read_cluster(state)
        assert cluster is not None and cluster["secure"] and len(cluster["nodes"]) == 3
        assert all(pid is not None for pid in node_pids(state).values())

        status = cvserve(home, "kafka", "status")
        assert status.returncode == 0 and "3 of 3 broker(s) ready" in status.stdout, status.stdout

        # No flags: the local cluster's address and client file are found.
        topics = cvserve(home, "kafka", "topics", "--pipeline", "classify")
        assert topics.returncode == 0 and "(created)" in topics.stdout, topics.stderr
        assert cvserve(home, "kafka", "lag", "--pipeline", "classify").returncode == 0

        # Replicated as promised, read with the cluster's own client settings.
        from confluent_kafka.admin import AdminClient, ConfigResource

        client = read_properties(Path(cluster["client_config"]))
        admin = AdminClient({"bootstrap.servers": cluster["bootstrap"], **client})
        topic = "cvserve.classify.classify.in"

        def replica_counts(asked: AdminClient) -> set[int]:
            # A broker other than the creator may not know the topic yet: ask until it does.
            partitions = asked.list_topics(topic, timeout=30).topics[topic].partitions.values()
            return {len(p.replicas) for p in partitions}

        poll_until(lambda c=admin: replica_counts(c) == {3}, 30, what=f"3 replicas of {topic}")
        (described,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
        assert described.result(timeout=30)["min.insync.replicas"].value == "2"
        del admin  # closed: it would log the brokers' shutdown below

        bootstrap = str(cluster["bootstrap"])
        lag = ("kafka", "lag", "--pipeline", "classify", "--bootstrap", bootstrap)
        # No credentials at all (PLAINTEXT against a TLS listener).
        assert "another protocol" in one_line_error(cvserve(home, *lag))
        # A wrong password.
        wrong = cvserve(home, *lag, CVSERVE_KAFKA_CLIENT_CONFIG=cluster["client_config"],
                        CVSERVE_KAFKA_SASL_PASSWORD="not-the-password")  # fmt: skip
        assert "authentication failed" in one_line_error(wrong)
        # No CA: the broker's certificate cannot be verified.
        no_ca = write_properties(
            tmp_path / "no-ca.properties",
            {k: v for k, v in client.items() if k != "ssl.ca.location"},
        )
        refused = cvserve(home, *lag, **{CLIENT_CONFIG_ENV: str(no_ca)})
        assert "TLS handshake failed" in one_line_error(refused)
        # A setting cvserve does not take from a file is named, not ignored.
        loose = tmp_path / "loose.properties"
        loose.write_text("acks=0\n")
        assert "acks is not a security setting" in one_line_error(
            cvserve(home, *lag, "--client-config", str(loose))
        )

        pids = [pid for pid in node_pids(state).values() if pid is not None]
        stopped = cvserve(home, "kafka", "stop")
        assert stopped.returncode == 0 and "stopped 3" in stopped.stdout
        assert not any(pid_alive(pid) for pid in pids)
        assert cvserve(home, "kafka", "status").returncode == 1
    finally:
        cvserve(home, "kafka", "stop")
