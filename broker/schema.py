"""The Kafka message schema of cvserve, version 1: what a record's key, value and headers hold.

Every record is one `Message`:

- **value**: an image or crop exactly as encoded (``image/jpeg``, ``image/png``, …) — compressed
  bytes cross the broker, never decoded tensors — or, for a result, the pipeline's outputs as
  JSON (``RESULT_CONTENT_TYPE``, see `encode_outputs`).
- **key**: the request id, or a stream/camera id where per-key order matters (Kafka keeps the
  order of one key: it always lands in the same partition).
- **headers** (UTF-8 strings, names in `Header`): schema version, request id, pipeline, stage,
  content type, original image size, crop index and box for crops, and the trace context — a
  W3C ``traceparent`` plus a JSON list of ``[label, unix_ns]`` hops every component appends to.
  A hop label is ``<component>.<event>`` (`hop_label`). A stage worker stamps ``<stage>.ready``
  (its poll that returned the message began: before that the message waited for a busy worker),
  ``<stage>.consumed`` (the poll returned it), ``<stage>.dispatched`` and ``<stage>.answered``
  (just before and after its Triton call), ``<stage>.emitting`` (its outputs are being made, once
  the batch's calls are done) and ``<stage>.produced`` (sent on); a results reader stamps
  ``results.ready`` and ``results.consumed``.

A dead-letter record keeps the poison record's key, value and headers as received and adds
``error``, ``error-stage`` and ``source`` (``topic/partition@offset``) headers.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

SCHEMA_VERSION = 1
RESULT_CONTENT_TYPE = "application/vnd.cvserve.outputs+json"
UNKNOWN_CONTENT_TYPE = "application/octet-stream"
# Image formats `preprocess.sniff` recognises -> content type.
IMAGE_CONTENT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "bmp": "image/bmp",
}
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
# Hop events (the part of a hop label after the component), in the order a stage stamps them.
READY, CONSUMED, DISPATCHED, ANSWERED, EMITTING, PRODUCED = (
    "ready",
    "consumed",
    "dispatched",
    "answered",
    "emitting",
    "produced",
)


class Header(StrEnum):
    """Header names of schema v1."""

    SCHEMA = "cvserve-schema"
    REQUEST_ID = "request-id"
    PIPELINE = "pipeline"
    # For an image or crop: the stage it is addressed to. For a result: the stage that made it.
    STAGE = "stage"
    CONTENT_TYPE = "content-type"
    ORIGINAL_SIZE = "original-size"  # "<width>x<height>" of the image the request started with
    CROP_INDEX = "crop-index"
    CROP_BOX = "crop-box"  # "x1,y1,x2,y2", integer pixels of the original image
    TRACEPARENT = "traceparent"
    HOPS = "hops"
    # Dead-letter records only.
    ERROR = "error"
    ERROR_STAGE = "error-stage"
    SOURCE = "source"


REQUIRED_HEADERS = (
    Header.SCHEMA,
    Header.REQUEST_ID,
    Header.PIPELINE,
    Header.STAGE,
    Header.CONTENT_TYPE,
    Header.TRACEPARENT,
)


class SchemaError(ValueError):
    """A record that is not a cvserve schema-v1 message; ``str()`` is the reason."""


class Record(NamedTuple):
    """A Kafka record: key, value and headers, as the clients send and receive it."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @classmethod
    def consumed(cls, message: Any) -> Record:
        """The record of a message a (confluent-kafka) consumer returned."""
        return cls(message.key(), message.value(), list(message.headers() or []))


def new_request_id() -> str:
    return uuid.uuid4().hex


def hop_label(component: str, event: str) -> str:
    """``hop_label("detect", DISPATCHED)`` → ``"detect.dispatched"``."""
    return f"{component}.{event}"


@dataclass(frozen=True)
class Hop:
    """One component touching a message: ``label`` (e.g. ``classify.consumed``) at ``t_ns``."""

    label: str
    t_ns: int


@dataclass(frozen=True)
class TraceContext:
    """A W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``) and the hops so far."""

    traceparent: str
    hops: tuple[Hop, ...] = ()

    @classmethod
    def new(cls) -> TraceContext:
        return cls(f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")

    @property
    def trace_id(self) -> str:
        return self.traceparent.split("-")[1]

    def child(self) -> TraceContext:
        """The same trace and hops under a new span id (a new message derived from this one)."""
        return replace(self, traceparent=f"00-{self.trace_id}-{secrets.token_hex(8)}-01")

    def hop(self, label: str, t_ns: int | None = None) -> TraceContext:
        return replace(
            self, hops=(*self.hops, Hop(label, time.time_ns() if t_ns is None else t_ns))
        )

    def hop_not_before(self, label: str, t_ns: int) -> TraceContext:
        """`hop` at ``t_ns``, or at the last hop's time if that is later (a worker ready before
        the message was produced: what it waited for starts when the message existed)."""
        return self.hop(label, max([t_ns, *(h.t_ns for h in self.hops[-1:])]))

    def restamp(self, label: str) -> TraceContext:
        """`hop`, replacing the last hop if it has the same label (a retried step is stamped
        at its last try)."""
        hops = self.hops[:-1] if self.hops and self.hops[-1].label == label else self.hops
        return replace(self, hops=hops).hop(label)


@dataclass(frozen=True)
class Crop:
    """Which crop of the original image a message holds: ``index`` and ``box`` (x1, y1, x2, y2)."""

    index: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Message:
    """One cvserve message (see the module docstring for what each field means on the wire)."""

    request_id: str
    pipeline: str
    stage: str
    value: bytes
    content_type: str
    trace: TraceContext = field(default_factory=TraceContext.new)
    key: str = ""  # empty: the request id
    original_size: tuple[int, int] | None = None  # (width, height)
    crop: Crop | None = None

    @property
    def record_key(self) -> str:
        return self.key or self.request_id

    @property
    def dedup_key(self) -> tuple[str, int]:
        """(request id, crop index or -1): what a reader drops duplicates by."""
        return (self.request_id, -1 if self.crop is None else self.crop.index)

    @property
    def call_id(self) -> str:
        """The request id a stage passes to Triton for this message (and Triton writes into its
        trace): the request id, with ``:<crop index>`` for a crop."""
        return self.request_id if self.crop is None else f"{self.request_id}:{self.crop.index}"

    @property
    def is_result(self) -> bool:
        return self.content_type == RESULT_CONTENT_TYPE

    def with_hop(self, label: str) -> Message:
        return replace(self, trace=self.trace.hop(label))

    def to_record(self) -> Record:
        headers = {
            Header.SCHEMA: str(SCHEMA_VERSION),
            Header.REQUEST_ID: self.request_id,
            Header.PIPELINE: self.pipeline,
            Header.STAGE: self.stage,
            Header.CONTENT_TYPE: self.content_type,
            Header.TRACEPARENT: self.trace.traceparent,
            Header.HOPS: json.dumps([[h.label, h.t_ns] for h in self.trace.hops]),
        }
        if self.original_size is not None:
            headers[Header.ORIGINAL_SIZE] = "{}x{}".format(*self.original_size)
        if self.crop is not None:
            headers[Header.CROP_INDEX] = str(self.crop.index)
            headers[Header.CROP_BOX] = ",".join(str(v) for v in self.crop.box)
        return Record(
            self.record_key.encode(),
            self.value,
            [(str(name), value.encode()) for name, value in headers.items()],
        )

    @classmethod
    def from_record(
        cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Message:
        """Parse a received record; raises `SchemaError` saying what is wrong with it."""
        fields = decode_headers(headers)
        missing = [str(name) for name in REQUIRED_HEADERS if name not in fields]
        if missing:
            raise SchemaError(f"missing header(s) {', '.join(missing)}")
        if fields[Header.SCHEMA] != str(SCHEMA_VERSION):
            raise SchemaError(
                f"schema version {fields[Header.SCHEMA]!r}, this reader knows {SCHEMA_VERSION}"
            )
        if value is None:
            raise SchemaError("record without a value")
        if not _TRACEPARENT.match(fields[Header.TRACEPARENT]):
            raise SchemaError(f"invalid traceparent {fields[Header.TRACEPARENT]!r}")
        request_id = fields[Header.REQUEST_ID]
        try:
            return cls(
                request_id=request_id,
                pipeline=fields[Header.PIPELINE],
                stage=fields[Header.STAGE],
                value=bytes(value),
                content_type=fields[Header.CONTENT_TYPE],
                trace=TraceContext(fields[Header.TRACEPARENT], _parse_hops(fields)),
                key="" if key is None or key.decode() == request_id else key.decode(),
                original_size=_parse_size(fields.get(Header.ORIGINAL_SIZE)),
                crop=_parse_crop(fields),
            )
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"malformed header: {exc}") from exc


def decode_headers(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as a dict of strings (the last of repeated names wins)."""
    try:
        return {name: raw.decode() for name, raw in headers or ()}
    except (UnicodeDecodeError, AttributeError) as exc:
        raise SchemaError(f"header is not UTF-8 text: {exc}") from exc


def _parse_hops(fields: Mapping[str, str]) -> tuple[Hop, ...]:
    raw = fields.get(Header.HOPS)
    if not raw:
        return ()
    try:
        return tuple(Hop(str(label), int(t_ns)) for label, t_ns in json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"malformed hops header {raw[:80]!r}") from exc


def _parse_size(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    width, height = raw.split("x")
    return (int(width), int(height))


def _parse_crop(fields: Mapping[str, str]) -> Crop | None:
    if Header.CROP_INDEX not in fields:
        return None
    x1, y1, x2, y2 = (int(v) for v in fields[Header.CROP_BOX].split(","))
    return Crop(int(fields[Header.CROP_INDEX]), (x1, y1, x2, y2))


def encode_outputs(message: Message, outputs: Mapping[str, np.ndarray]) -> bytes:
    """A result value: JSON ``{"request_id", "crop_index", "outputs": {NAME: {dtype, shape,
    data}}}``. Floats are written from their float32/float64 values, so `decode_outputs` gives
    back the same numbers bit for bit."""
    body = {
        "schema": SCHEMA_VERSION,
        "request_id": message.request_id,
        "crop_index": None if message.crop is None else message.crop.index,
        "outputs": {
            name: {
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "data": array.ravel().tolist(),
            }
            for name, array in outputs.items()
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_outputs(value: bytes) -> dict[str, np.ndarray]:
    """The outputs of a result value written by `encode_outputs`."""
    try:
        body = json.loads(value)
        return {
            name: np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])
            for name, t in body["outputs"].items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(f"not a cvserve result value: {exc}") from exc


def result_message(source: Message, stage: str, outputs: Mapping[str, np.ndarray]) -> Message:
    """The result of ``source`` after ``stage``: same request, key and crop, a child span."""
    return replace(
        source,
        stage=stage,
        value=encode_outputs(source, outputs),
        content_type=RESULT_CONTENT_TYPE,
        trace=source.trace.child(),
    )


def dead_letter_record(received: Record, reason: str, stage: str, source: str) -> Record:
    """``received`` as it was, with the reason it was refused, by which stage, from where."""
    extra = [
        (str(Header.ERROR), reason.encode()),
        (str(Header.ERROR_STAGE), stage.encode()),
        (str(Header.SOURCE), source.encode()),
    ]
    return Record(received.key, received.value, [*received.headers, *extra])
