"""Redis Streams as cvserve's broker, beside Kafka: the same messages, names and groups.

- **Names**: a stream per Kafka topic, named like it (`broker.topics.Topics`:
  ``<namespace>.<pipeline>.<stage>.in``, ``….results``, ``….dead-letter``); a stage's workers
  are the consumer group `Topics.group` of its input stream.
- **Entries**: one schema-v1 `Record` (`broker.schema`) per stream entry. Fields: ``value`` (the
  image, crop or result bytes), ``key`` (absent: no key) and one ``h:<name>`` field per header
  (``h:request-id``, ``h:traceparent``, …). Only ``value`` is required, as on Kafka. A record read
  from a stream says where it was read as ``<stream>@<entry id>`` (its ``source``; a request's
  ``origin``). A header without a value (Kafka's null) is written as an empty one.
- **Delivery** is at-least-once, like the Kafka workers': XREADGROUP hands a worker entries, it
  XACKs them only once their outputs were XADDed; entries a worker held past the group's claim
  idle time (it died) are taken over by another worker with XAUTOCLAIM.

What this transport does not do that Kafka does: keep anything after the server stops (the local
server runs without persistence), replicate, or trim: streams grow until deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from cvserve.broker.producer import ImageRequests
from cvserve.broker.routes import Route
from cvserve.broker.schema import Message, Record
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits

VALUE_FIELD = b"value"
KEY_FIELD = b"key"
HEADER_PREFIX = b"h:"
# The id before every entry: read a stream from its beginning, or a group from its first entry.
FIRST_ID = "0-0"
# Entries one XREAD of a results stream returns at most (results are small JSON).
_READ_COUNT = 256
_CONNECT_TIMEOUT_S = 5.0


def redis_client(url: str) -> redis.Redis:
    """A client of the server at ``url`` (``redis://host:port[/db]``); replies stay bytes."""
    return redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT_S)


def record_fields(record: Record) -> dict[bytes, bytes]:
    """The stream entry fields of ``record`` (the module docstring says which)."""
    fields: dict[bytes, bytes] = {}
    if record.value is not None:
        fields[VALUE_FIELD] = record.value
    if record.key is not None:
        fields[KEY_FIELD] = record.key
    for name, value in record.headers:  # a repeated name: the last wins, as when read
        fields[HEADER_PREFIX + name.encode("utf-8", "surrogateescape")] = value or b""
    return fields


def entry_source(stream: str, entry_id: bytes | str) -> str:
    """Where an entry was read: ``<stream>@<entry id>``."""
    return f"{stream}@{_text(entry_id)}"


def record_of(stream: str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Record:
    """The `Record` an entry of ``stream`` holds. Fields that are none of cvserve's are ignored
    (another producer's extras), as Kafka headers not cvserve's are."""
    headers = [
        (name[len(HEADER_PREFIX) :].decode("utf-8", "surrogateescape"), value)
        for name, value in fields.items()
        if name.startswith(HEADER_PREFIX)
    ]
    return Record(
        fields.get(KEY_FIELD), fields.get(VALUE_FIELD), headers, entry_source(stream, entry_id)
    )


def ensure_group(client: redis.Redis, stream: str, group: str) -> bool:
    """Create consumer group ``group`` of ``stream`` (and the stream) reading from its first
    entry, unless it exists; True if created."""
    try:
        client.xgroup_create(stream, group, id=FIRST_ID, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # another worker was first
            raise
        return False
    return True


def last_id(client: redis.Redis, stream: str) -> str:
    """The id of the newest entry of ``stream`` (`FIRST_ID` if it has none or does not exist)."""
    newest = client.xrevrange(stream, count=1)
    return _text(newest[0][0]) if newest else FIRST_ID


def _text(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


class StreamReader:
    """Every entry of ``stream`` from its beginning (or from now), no consumer group: every
    reader sees every entry. The same contract as `broker.results.TopicReader`."""

    def __init__(
        self, client: redis.Redis, stream: str, from_beginning: bool = True, owns: bool = False
    ) -> None:
        self.client, self.stream, self._owns = client, stream, owns
        self.position = FIRST_ID if from_beginning else last_id(client, stream)

    def poll(self, timeout_s: float = 0.5) -> list[Record]:
        """The entries that arrived within ``timeout_s``, in order."""
        block = max(1, round(timeout_s * 1000)) if timeout_s > 0 else None  # 0 blocks forever
        replies = self.client.xread({self.stream: self.position}, count=_READ_COUNT, block=block)
        records = []
        for _stream, entries in replies or ():
            for entry_id, fields in entries:
                records.append(record_of(self.stream, entry_id, fields))
                self.position = _text(entry_id)
        return records

    def close(self) -> None:
        if self._owns:
            self.client.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisImageProducer(ImageRequests):
    """Sends images to the first stage of ``pipeline`` on the Redis server at ``url``: the
    `broker.producer.ImageProducer` contract, where an XADD's reply is the acknowledgement."""

    def __init__(
        self,
        url: str,
        pipeline: Route | str,
        namespace: str | None = None,
        limits: MessageLimits = LIMITS,
    ) -> None:
        super().__init__(pipeline, namespace, limits)
        self.stream = self.topics.stage_in(self.stage)
        self.client = redis_client(url)

    def send_message(self, message: Message, stream: str | None = None) -> str:
        """Add a ready-made message (default stream: the first stage's); returns its entry id."""
        return self.send_record(self.record(message), stream)

    def send_record(self, record: Record, stream: str | None = None) -> str:
        """Add a checked record (`record`) (default stream: the first stage's); returns its
        entry id."""
        return _text(self.client.xadd(stream or self.stream, record_fields(record)))

    def send(self, image: bytes, key: str = "", validate: bool = True) -> tuple[str, str]:
        """Add one image; returns its request id and entry id."""
        message = self.message(image, key, validate)
        return message.request_id, self.send_message(message)

    def submit(self, images: Iterable[bytes], key: str = "", validate: bool = True) -> list[str]:
        """Check every image, add them all in one round trip; returns their request ids in
        order. If any image fails its checks, nothing is sent."""
        messages = [self.message(image, key, validate) for image in images]
        records = [self.record(m) for m in messages]
        add_records(self.client, [(self.stream, r) for r in records])
        return [m.request_id for m in messages]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RedisImageProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_records(client: redis.Redis, records: Sequence[tuple[str, Record]]) -> list[str]:
    """XADD each (stream, record) in one round trip (no transaction); returns the entry ids.
    Raises the first error the server answered (every other entry may have been added)."""
    pipe = client.pipeline(transaction=False)
    for stream, record in records:
        pipe.xadd(stream, record_fields(record))
    replies: list[Any] = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return [_text(reply) for reply in replies]
