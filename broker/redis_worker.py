"""`RedisStageWorker`: a stage worker whose broker is Redis Streams instead of Kafka.

What a record becomes is the Kafka worker's too: the same `broker.stage_step.StageStep` checks
and dead-letters with reasons, calls Triton with its retries and hops, and routes results, crops
and dead letters. This module is only the transport (`broker.redis_streams` says how records are
stream entries):

1. the worker is consumer ``consumer`` of the stage's group (`Topics.group`) on the stage's input
   stream (`Topics.stage_in`); per loop it first takes over, every ``claim_idle_ms / 2``, entries
   another consumer has held unacknowledged for more than ``claim_idle_ms`` (XAUTOCLAIM: that
   worker died), else reads new ones (XREADGROUP, at most ``batch_size``, blocking up to
   ``poll_timeout_ms``);
2. the batch goes through the step (`StageStep.run`); while it is in hand the worker resets
   its entries' idle time every ``claim_idle_ms / 3`` (XCLAIM to itself, JUSTID), so a slow
   Triton or a long backoff does not let another worker take them over;
3. every output is XADDed (one round trip); only once the server answered for each are the
   batch's entries acknowledged (XACK). Redis unreachable → the outputs are sent again with
   backoff (duplicates, never losses: readers drop repeats).

A stop request (SIGTERM) lets the batch in hand finish; if Triton or Redis is down at that moment
the batch is left unacknowledged, and another worker claims it after ``claim_idle_ms``. A batch
is at most ``batch_size`` entries (Redis cannot bound a read by bytes: each at most a record's
limit). Per-key order is not kept across workers (a stream has no partitions). An entry whose
handling kills its worker is claimed again after every death, as Kafka redelivers such a record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Unpack

import redis

from cvserve.broker.ensemble import EnsembleCaller
from cvserve.broker.redis_streams import (
    FIRST_ID,
    add_records,
    ensure_group,
    record_of,
    redis_client,
)
from cvserve.broker.routes import Route
from cvserve.broker.stage_loop import LoopOptions, StageLoop
from cvserve.broker.stage_step import (
    MAX_REASON_CHARS,
    BatchAbandoned,
    Output,
    StepRecord,
    wait_alive,
)
from cvserve.broker.stats import WorkerStats
from cvserve.broker.worker_config import WorkerConfig

log = logging.getLogger(__name__)
# How long a worker may hold entries unacknowledged without a sign of life before another takes
# them over: the part a Kafka group's session timeout plays.
DEFAULT_CLAIM_IDLE_MS = WorkerConfig.session_timeout_ms


def consumer_name() -> str:
    """A group member name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisStageWorker(StageLoop):
    """One consumer of the group of ``stage`` of ``route`` on the Redis server at ``url``."""

    def __init__(
        self,
        url: str,
        route: Route,
        stage: str,
        triton_url: str,
        config: WorkerConfig | None = None,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        consumer: str | None = None,
        **options: Unpack[LoopOptions],
    ) -> None:
        super().__init__(route, stage, triton_url, config, **options)
        self.url = url
        self.stream = self.topic  # the stream is named like the Kafka topic
        self.claim_idle_ms = claim_idle_ms
        self.consumer = consumer or consumer_name()
        self._in_hand: list[bytes] = []  # entry ids of the batch in hand
        self._refreshed = 0.0  # monotonic: when their idle time was last reset
        self._claim_cursor = FIRST_ID  # where the next XAUTOCLAIM scan of the pending list starts

    @property
    def claim_interval_s(self) -> float:
        return self.claim_idle_ms / 2000

    def run(self, stop: threading.Event) -> WorkerStats:
        """Work until ``stop`` is set; returns the final counters."""
        cfg = self.config
        client = redis_client(self.url)
        delay = cfg.retry_initial_s
        next_claim = 0.0  # at once: a dead predecessor's entries first

        def close() -> None:
            self._leave(client)
            client.close()

        with self.serving(close) as (caller, pool):
            ensure_group(client, self.stream, self.group)
            log.info(
                "worker %s: consumer %s of group %s, stream %s at %s, Triton %s ensemble %s",
                self.stats.pid,
                self.consumer,
                self.group,
                self.stream,
                self.url,
                self.triton_url,
                self.stage.ensemble,
            )
            self.stats.state = "running"
            if self.metrics is not None:
                self.metrics.joined = True  # the group exists and this consumer reads it
            while not stop.is_set():
                self._beat()
                ready_ns = time.time_ns()
                try:
                    entries = []
                    if time.monotonic() >= next_claim:
                        entries = self._claim(client)
                        next_claim = time.monotonic() + self.claim_interval_s
                    if not entries:
                        entries = self._read(client)
                    if entries:
                        started_ns = time.monotonic_ns()
                        self._handle_entries(entries, ready_ns, client, caller, pool, stop)
                        self.stats.busy_ns += time.monotonic_ns() - started_ns
                    self._update_stream_lag(client)
                    delay = cfg.retry_initial_s
                except redis.ConnectionError as exc:  # what was read stays pending: claimed later
                    self.stats.last_error = f"redis: {exc}"[:MAX_REASON_CHARS]
                    log.warning(
                        "worker %s: redis: %s; retrying in %.1f s", self.stats.pid, exc, delay
                    )
                    stop.wait(delay)
                    delay = min(delay * 2, cfg.retry_max_s)
                self._write_stats()
        return self.stats

    def _claim(self, client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries idle in another consumer's hands for over ``claim_idle_ms``, now this one's."""
        reply = client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.config.batch_size,
        )
        cursor, entries = reply[0], reply[1]  # Redis 7 adds the ids of deleted entries
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        if entries:
            self.stats.claimed += len(entries)
            log.warning(
                "worker %s: claimed %d entr%s idle for over %d ms (their worker stopped)",
                self.stats.pid,
                len(entries),
                "y" if len(entries) == 1 else "ies",
                self.claim_idle_ms,
            )
        return list(entries)

    def _read(self, client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """New entries for this group, waiting up to ``poll_timeout_ms`` for the first."""
        replies = client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=self.config.batch_size,
            block=self.config.poll_timeout_ms,
        )
        return [entry for _stream, entries in replies or () for entry in entries]

    def _handle_entries(
        self,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        ready_ns: int,
        client: redis.Redis,
        caller: EnsembleCaller,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
    ) -> None:
        """Check, answer, send the outputs of one batch, then acknowledge it."""
        batch = [
            StepRecord(entry_id, record_of(self.stream, entry_id, fields), ready_ns)
            for entry_id, fields in entries
        ]
        self._in_hand, self._refreshed = [entry_id for entry_id, _ in entries], time.monotonic()
        keep_alive = partial(self._keep_alive, client)
        try:
            outcome = self.step.run(batch, caller.infer, pool, stop, keep_alive)
            self._add_outputs(outcome.produce, client, stop)
            added_ns = time.time_ns()
            for item in outcome.items:
                self.step.observe(item, added_ns)
            client.xack(self.stream, self.group, *outcome.commit)
            self.stats.committed_batches += 1
        finally:
            self._in_hand = []

    def _add_outputs(
        self, outgoing: list[Output], client: redis.Redis, stop: threading.Event
    ) -> None:
        """XADD every output (results, crops, dead letters), again with backoff until the server
        answered for all; `BatchAbandoned` if stopped meanwhile."""
        delay = self.config.retry_initial_s
        while True:
            try:
                add_records(client, outgoing)
                break
            except redis.RedisError as exc:
                self.stats.last_error = f"adding outputs: {exc}"[:MAX_REASON_CHARS]
                log.warning(
                    "worker %s: %d output(s) not added (%s); again in %.1f s",
                    self.stats.pid,
                    len(outgoing),
                    exc,
                    delay,
                )
                if wait_alive(delay, stop, partial(self._keep_alive, client)):
                    raise BatchAbandoned(
                        f"stopped while Redis did not take {len(outgoing)} output(s): the batch "
                        "is left unacknowledged for another worker to claim"
                    ) from exc
                delay = min(delay * 2, self.config.retry_max_s)
        self.step.count_delivered(stream for stream, _ in outgoing)

    def _keep_alive(self, client: redis.Redis) -> None:
        """Reset the idle time of the entries in hand every ``claim_idle_ms / 3``, so no other
        worker claims them while this one lives."""
        self._beat()
        if not self._in_hand or time.monotonic() - self._refreshed < self.claim_idle_ms / 3000:
            return
        with contextlib.suppress(redis.RedisError):  # the next read or add reports it
            client.xclaim(self.stream, self.group, self.consumer, 0, self._in_hand, justid=True)
        self._refreshed = time.monotonic()

    def _update_stream_lag(self, client: redis.Redis) -> None:
        """The group's lag on its stream (entries not yet delivered to any of its consumers)."""
        for group in client.xinfo_groups(self.stream):
            name = group.get("name")
            if name in (self.group, self.group.encode()) and group.get("lag") is not None:
                self.stats.lag = {self.stream: int(group["lag"])}

    def _leave(self, client: redis.Redis) -> None:
        """Leave the group if this consumer holds nothing (else its entries stay to be
        claimed)."""
        with contextlib.suppress(redis.RedisError):
            for member in client.xinfo_consumers(self.stream, self.group):
                name = member.get("name")
                if name in (self.consumer, self.consumer.encode()) and member.get("pending") == 0:
                    client.xgroup_delconsumer(self.stream, self.group, self.consumer)
