"""A local broker's fixed heap is mostly free at rest: no Kafka default sized for a large heap
holds a share of it (the log cleaner's dedupe map alone took 128 MiB, a third of a 384 MiB node,
and kept G1 marking concurrently under load)."""

from __future__ import annotations

import re
import subprocess

import pytest
from broker_testing import require_tool

from cvserve.deploy.kafka import KafkaBroker

pytestmark = pytest.mark.kafka


def test_a_broker_at_rest_keeps_most_of_its_heap_free(kafka: KafkaBroker) -> None:
    jcmd = require_tool("jcmd", "apt-get install openjdk-17-jdk-headless")
    assert kafka.process is not None
    pid = str(kafka.process.pid)
    subprocess.run([jcmd, pid, "GC.run"], check=True, capture_output=True, timeout=60)
    info = subprocess.run(
        [jcmd, pid, "GC.heap_info"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    total_kb, used_kb = (int(n) for n in re.search(r"total (\d+)K, used (\d+)K", info).groups())
    assert total_kb == kafka.heap_mb * 1024
    assert used_kb < 0.2 * total_kb, info
