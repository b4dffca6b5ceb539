"""Records a worker's keep-alive polls return mid-batch are carried into the next batch; its
partitions are paused only once the carried records make a batch (no broker: a consumer whose
polls always return a record)."""

from __future__ import annotations

from broker_testing import FakeMessage
from confluent_kafka import TopicPartition

from cvserve.broker.worker import StageWorker
from cvserve.broker.worker_config import WorkerConfig
from cvserve.pipelines.app.pipeline_args import catalog_route

TOPIC = "in"


class Backlog:
    """Two partitions with records always waiting; remembers what was paused."""

    def __init__(self, value: bytes = b"v") -> None:
        self.value = value
        self.offsets = {0: 0, 1: 0}
        self.paused: list[tuple[str, int]] = []

    def poll(self, timeout: float) -> FakeMessage:
        partition = min(self.offsets, key=self.offsets.__getitem__)
        self.offsets[partition] += 1
        return FakeMessage(TOPIC, partition, self.offsets[partition] - 1, self.value)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in self.offsets]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in partitions]


def worker(**config: int) -> StageWorker:
    return StageWorker(
        "127.0.0.1:1", catalog_route("classify"), "classify", "127.0.0.1:2", WorkerConfig(**config)
    )


def test_nothing_is_paused_until_a_batch_is_carried_then_every_partition_is() -> None:
    stage = worker(batch_size=4)
    consumer = Backlog()
    for carried in range(1, 4):
        stage._keep_alive(consumer)  # type: ignore[arg-type]
        assert len(stage._carried) == carried and consumer.paused == []
    stage._keep_alive(consumer)  # type: ignore[arg-type]
    assert len(stage._carried) == 4
    assert sorted(consumer.paused) == [(TOPIC, 0), (TOPIC, 1)]
    assert sorted((tp.topic, tp.partition) for tp in stage._paused) == sorted(consumer.paused)
    # In order per partition, as polled.
    assert [(p.partition, p.offset) for p in stage._carried] == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_the_prefetch_bound_in_bytes_also_ends_the_carrying() -> None:
    stage = worker(batch_size=100, prefetch_kbytes=1)
    consumer = Backlog(value=b"x" * 700)
    stage._keep_alive(consumer)  # type: ignore[arg-type]
    assert consumer.paused == []
    stage._keep_alive(consumer)  # type: ignore[arg-type]  # 1400 bytes ≥ 1 KiB
    assert len(stage._carried) == 2 and len(consumer.paused) == 2
