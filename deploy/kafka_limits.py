"""Record size limits of cvserve's Kafka traffic, declared once.

Images need the broker's, the topics', the producer's and the consumer's limits raised together;
each of those configs is a view of one `MessageLimits`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
# A record batch's header plus one record's varint framing, as the broker counts them.
RECORD_FRAMING_BYTES = 512


@dataclass(frozen=True)
class MessageLimits:
    """How large one record (an encoded image or crop plus its headers) may be, in bytes."""

    max_message_bytes: int = 16 * MIB
    # Room left for the key, the headers and the record-batch framing.
    record_overhead_bytes: int = 64 * 1024
    # Upper bound of one fetch response: bounds a consumer's memory per poll.
    fetch_max_bytes: int = 64 * MIB
    # A record key is an id (request, stream, camera): fan-out copies it into every crop.
    max_key_bytes: int = 4096
    # The trace a record carries: at most this many hops in this many bytes of header; the
    # oldest are dropped beyond (counted in the ``hops-dropped`` header).
    max_hops: int = 64
    max_hops_bytes: int = 8192

    @property
    def max_value_bytes(self) -> int:
        """The largest image or crop a producer may send."""
        return self.max_message_bytes - self.record_overhead_bytes

    def fits(self, record_bytes: int) -> bool:
        """Whether a record of ``record_bytes`` (key + value + headers, `Record.size`) can be
        produced: the broker counts the whole record batch against ``max_message_bytes``."""
        return record_bytes + RECORD_FRAMING_BYTES <= self.max_message_bytes

    def broker_properties(self) -> dict[str, str]:
        """``server.properties`` entries."""
        return {
            "message.max.bytes": str(self.max_message_bytes),
            "replica.fetch.max.bytes": str(self.max_message_bytes),
            "fetch.max.bytes": str(self.fetch_max_bytes),
            "socket.request.max.bytes": str(max(self.fetch_max_bytes, 100 * MIB)),
        }

    def topic_config(self) -> dict[str, str]:
        """Per-topic configs, so that a broker with smaller defaults still takes images."""
        return {"max.message.bytes": str(self.max_message_bytes)}

    def producer_config(self) -> dict[str, int]:
        """librdkafka (confluent-kafka) producer settings."""
        return {"message.max.bytes": self.max_message_bytes}

    def consumer_config(self) -> dict[str, int]:
        """librdkafka (confluent-kafka) consumer settings; ``queued.max.messages.kbytes`` bounds
        what a consumer prefetches, so a slow stage grows lag, not memory."""
        return {
            "fetch.message.max.bytes": self.max_message_bytes,
            "fetch.max.bytes": self.fetch_max_bytes,
            "receive.message.max.bytes": self.fetch_max_bytes + MIB,
            "queued.max.messages.kbytes": self.fetch_max_bytes // 1024,
        }


LIMITS = MessageLimits()
