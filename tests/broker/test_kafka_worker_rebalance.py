"""A rebalance that takes a partition from a worker mid-poll and gives it straight back (as an
eager rebalance does) loses no record and answers none twice (no broker needed: a scripted
consumer with librdkafka's positions — a returned partition restarts at its committed offset)."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker_testing import FakeMessage
from confluent_kafka import TopicPartition

from cvserve.broker.polling import Polled, poll_records
from cvserve.broker.schema import Record
from cvserve.broker.worker import StageWorker, _Work
from cvserve.pipelines.app.pipeline_args import catalog_route

TOPIC = "in"


@dataclass
class ScriptedConsumer:
    """Partitions of ``size`` records each; at poll number ``rebalance_at`` the group revokes
    every partition (``on_revoke``) and assigns ``back`` again, each from its committed offset."""

    worker: StageWorker
    partitions: dict[int, int]  # partition -> records in it
    rebalance_at: int
    back: set[int]
    position: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    assigned: set[int] = field(default_factory=set)
    polls: int = 0

    def __post_init__(self) -> None:
        self.assigned = set(self.partitions)
        self.position = dict.fromkeys(self.partitions, 0)
        self.committed = dict.fromkeys(self.partitions, 0)

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls += 1
        if self.polls == self.rebalance_at:
            self.worker._on_revoke(self, [TopicPartition(TOPIC, p) for p in self.assigned])
            self.assigned = set(self.back)
            for p in self.assigned:
                self.position[p] = self.committed[p]
        for p in sorted(self.assigned):
            if self.position[p] < self.partitions[p]:
                self.position[p] += 1
                return FakeMessage(TOPIC, p, self.position[p] - 1)
        return None

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.assigned)]

    def seek(self, tp: TopicPartition) -> None:
        assert tp.partition in self.assigned
        self.position[tp.partition] = tp.offset


def handled_batches(consumer: ScriptedConsumer, worker: StageWorker) -> list[tuple[int, int]]:
    """Offsets the worker would answer, batch by batch, committing each batch as it goes."""
    answered = []
    while True:
        worker._revoked.clear()
        polled = poll_records(consumer, 4, 1 << 20, 0.0)
        if not polled:
            return answered
        work = [_Work((p.topic, p.partition), p.offset, p.record, 0) for p in polled]
        kept = worker._drop_revoked(work, consumer)
        answered += [(item.tp[1], item.offset) for item in kept]
        for item in kept:
            consumer.committed[item.tp[1]] = item.offset + 1


def new_worker() -> StageWorker:
    return StageWorker("127.0.0.1:1", catalog_route("classify"), "classify", "127.0.0.1:2")


def test_a_partition_given_back_mid_poll_is_read_again_from_its_first_dropped_record() -> None:
    worker = new_worker()
    consumer = ScriptedConsumer(worker, {0: 6}, rebalance_at=3, back={0})
    answered = handled_batches(consumer, worker)
    assert answered == [(0, n) for n in range(6)]  # none lost, none twice, in order
    assert worker.stats.revoked > 0


def test_a_partition_moved_away_mid_poll_is_left_to_its_new_owner() -> None:
    worker = new_worker()
    consumer = ScriptedConsumer(worker, {0: 6, 1: 6}, rebalance_at=2, back={1})
    answered = handled_batches(consumer, worker)
    assert [o for p, o in answered if p == 1] == list(range(6))
    assert [o for p, o in answered if p == 0] == []  # uncommitted: the new owner answers it
    assert consumer.committed[0] == 0


def test_records_carried_from_a_returned_partition_are_read_again_not_kept() -> None:
    worker = new_worker()
    consumer = ScriptedConsumer(worker, {0: 4}, rebalance_at=99, back={0})
    polled = poll_records(consumer, 2, 1 << 20, 0.0)
    work = [_Work((p.topic, p.partition), p.offset, p.record, 0) for p in polled]
    worker._on_revoke(consumer, consumer.assignment())  # the group took it and gave it back
    worker._carried = [Polled(TOPIC, 0, 2, Record(b"k", b"v", []))]  # fetched after its return
    assert worker._drop_revoked(work, consumer) == []
    assert worker._carried == [] and consumer.position[0] == 0
