"""Poll a consumer for a batch of records bounded in count and bytes.

librdkafka returns messages; `poll_records` turns each into a `Record` (one Python copy of its
key, value and headers) as it goes and stops once the batch holds ``max_bytes``, so a reader's
batch in hand is bounded by configuration, not by what producers send. Records left behind stay
in librdkafka's queue (bounded by ``queued.max.messages.kbytes`` per partition plus one fetch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvserve.broker.clients import Consumer, KafkaError
from cvserve.broker.schema import Record


@dataclass(frozen=True)
class Polled:
    """One consumed record and where it was read."""

    topic: str
    partition: int
    offset: int
    record: Record


def poll_records(
    consumer: Consumer,
    max_records: int,
    max_bytes: int,
    timeout_s: float,
    on_error: Callable[[KafkaError], None] = lambda error: None,
) -> list[Polled]:
    """Up to ``max_records`` records, at most ``max_bytes`` of them (`Record.size`) plus the one
    that crossed it: waits at most ``timeout_s`` for the first, then takes only what has already
    arrived. Error events go to ``on_error`` (which may raise), one poll each."""
    batch: list[Polled] = []
    size = 0
    for polls in range(max_records):
        message = consumer.poll(timeout_s if polls == 0 else 0)
        if message is None:
            break
        if message.error() is not None:
            on_error(message.error())
            continue
        record = Record.consumed(message)
        batch.append(Polled(message.topic(), message.partition(), message.offset(), record))
        size += record.size
        if size >= max_bytes:
            break
    return batch
