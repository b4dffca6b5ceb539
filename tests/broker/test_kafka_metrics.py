"""`cvserve kafka lag --format prometheus`: the exposition text, without a broker."""

from __future__ import annotations

import re

from cvserve.broker.lag import PartitionLag
from cvserve.broker.metrics import WORKER_METRICS, prometheus_text
from cvserve.broker.stats import WorkerStats

SAMPLE = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (-?\d+)$')


def test_lag_and_worker_counters_are_well_formed_samples() -> None:
    rows = [
        PartitionLag("detect", "g.detect", "t.detect.in", 0, None, 7),
        PartitionLag("detect", "g.detect", "t.detect.in", 1, 5, 9),
    ]
    worker = WorkerStats("detect_identify", "detect", "g.detect", pid=42, in_flight=3, consumed=11)
    text = prometheus_text("detect_identify", rows, [worker])
    samples: dict[str, list[tuple[str, int]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) cvserve_[a-z_]+ .+$", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        samples.setdefault(match[1], []).append((match[2], int(match[3])))
    assert [v for _, v in samples["cvserve_kafka_consumer_lag"]] == [7, 4]
    assert 'partition="1"' in samples["cvserve_kafka_consumer_lag"][1][0]
    assert samples["cvserve_worker_in_flight"] == [
        ('pipeline="detect_identify",stage="detect",pid="42"', 3)
    ]
    assert samples["cvserve_worker_consumed_total"][0][1] == 11
    assert len(samples) == 1 + len(WORKER_METRICS)


def test_label_values_are_escaped() -> None:
    rows = [PartitionLag('odd"stage', "g", "t", 0, 0, 0)]
    assert 'stage="odd\\"stage"' in prometheus_text("p", rows, [])
