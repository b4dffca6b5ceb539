"""The knobs of one stage worker (backpressure, group timing, retries), with their defaults: the
`cvserve worker` options read them from here."""

from __future__ import annotations

from dataclasses import dataclass

from cvserve.deploy.kafka_limits import LIMITS, MIB, MessageLimits


@dataclass(frozen=True)
class WorkerConfig:
    """Knobs of one stage worker (backpressure, group timing, retries)."""

    batch_size: int = 16  # records per poll
    # Bytes of records per poll (key, value, headers): one record more at most.
    batch_max_bytes: int = 32 * MIB
    max_in_flight: int = 4  # Triton requests at once
    # What librdkafka may hold fetched ahead of the worker; with one fetch of at most a record's
    # limit on its way, this bounds the worker's memory however large its lag grows.
    prefetch_kbytes: int = 8 * 1024
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    poll_timeout_ms: int = 500
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    server_error_attempts: int = 3
    # One Triton call's deadline (then it counts as Triton unavailable and is tried again).
    call_timeout_s: float = 60.0
    # After a stop request, how long to keep waiting for the broker to acknowledge outputs.
    stop_grace_s: float = 10.0

    @property
    def prefetch_bytes(self) -> int:
        """``prefetch_kbytes`` in bytes: librdkafka's bound per partition, and the worker's for
        records carried into its next batch."""
        return self.prefetch_kbytes * 1024

    def record_memory_bytes(self, partitions: int, limits: MessageLimits = LIMITS) -> int:
        """The most memory records take in a worker assigned ``partitions``, whatever producers
        send: librdkafka's queue (per partition the prefetch, overshot by one record), the
        records carried into the next batch (the prefetch bound and the record that crossed it)
        and the batch in hand (``batch_max_bytes`` and the record that crossed it), held twice
        while it is converted (librdkafka's buffer and Python's copy)."""
        prefetch = self.prefetch_bytes + limits.max_message_bytes
        queued = partitions * prefetch
        return queued + prefetch + 2 * (self.batch_max_bytes + limits.max_message_bytes)
