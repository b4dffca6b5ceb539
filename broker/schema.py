"""The Kafka message schema of cvserve, version 1: what a record's key, value and headers hold.

Every record is one `Message`:

- **value**: an image or crop exactly as encoded (``image/jpeg``, ``image/png``, …) — compressed
  bytes cross the broker, never decoded tensors — or, for a result, the pipeline's outputs as
  JSON (``RESULT_CONTENT_TYPE``, see `encode_outputs`).
- **key**: the request id, or a stream/camera id where per-key order matters (Kafka keeps the
  order of one key: it always lands in the same partition). Any bytes, at most
  ``MessageLimits.max_key_bytes``.
- **headers** (UTF-8 strings, names in `Header`): schema version, request id, pipeline, stage,
  content type, original image size, crop index and box for crops, the ``origin`` of the request
  (``topic/partition@offset`` of the record its first stage consumed), its ``input-digest``
  (SHA-256 of the image its first stage consumed) and the trace context — a
  W3C ``traceparent`` plus a JSON list of ``[label, unix_ns]`` hops every component appends to.
  A hop label is ``<component>.<event>`` (`hop_label`). A stage worker stamps ``<stage>.ready``
  (its poll that returned the message began: before that the message waited for a busy worker),
  ``<stage>.consumed`` (the poll returned it), ``<stage>.dispatched`` and ``<stage>.answered``
  (just before and after its Triton call), ``<stage>.emitting`` (its outputs are being made, once
  the batch's calls are done) and ``<stage>.produced`` (sent on); a results reader stamps
  ``results.ready`` and ``results.consumed``. Hops are bounded (``max_hops`` entries in
  ``max_hops_bytes``): the oldest are dropped and counted in ``hops-dropped``.
  Headers whose names are not cvserve's are never read (any bytes pass) and not sent on.

Only the value is required: a camera, ``kcat`` or a Java service may send a bare JPEG, with or
without a key (`OPTIONAL_DEFAULTS` says what stands in for each header left out; the pipeline and
stage come from the topic the record was read from).

A record that breaks these rules raises `SchemaError` naming the field (``header crop-box: …``,
``key: …``); a stage worker then sends it to its dead-letter topic (`broker.dead_letters`). The
trace context and the ``hops`` header live in `broker.hops`.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

# The hop events and the trace types are part of the message schema: re-exported (``X as X``).
from cvserve.broker.hops import ANSWERED as ANSWERED
from cvserve.broker.hops import CONSUMED as CONSUMED
from cvserve.broker.hops import DISPATCHED as DISPATCHED
from cvserve.broker.hops import EMITTING as EMITTING
from cvserve.broker.hops import PRODUCED as PRODUCED
from cvserve.broker.hops import READY as READY
from cvserve.broker.hops import Hop as Hop
from cvserve.broker.hops import TraceContext, encode_hops, parse_hops
from cvserve.broker.hops import hop_label as hop_label
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError

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
# A crop index is below this (a fan-out stage sends at most this many crops per image).
MAX_CROPS = 1 << 16
# Text headers (ids, names, content type, origin) are at most this long.
MAX_TEXT_CHARS = 256
# Image sides a record may claim (original size, crop box), in pixels.
MAX_SIDE = 1 << 20
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_DECIMAL = re.compile(r"[0-9]{1,19}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_INT64_MAX = (1 << 63) - 1


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
    # "topic/partition@offset" of the record the request's first stage consumed.
    ORIGIN = "origin"
    # Hex SHA-256 of the image the request's first stage consumed (`input_digest`).
    INPUT_DIGEST = "input-digest"
    TRACEPARENT = "traceparent"
    HOPS = "hops"
    HOPS_DROPPED = "hops-dropped"  # how many of the oldest hops were dropped on the way
    # Dead-letter records only.
    ERROR = "error"
    ERROR_STAGE = "error-stage"
    SOURCE = "source"
    TRIMMED = "dead-letter-trimmed"  # JSON: what was dropped to fit, with sizes and SHA-256


# What a record without the header is read as (`Message.from_record`): any producer's image
# is a request. cvserve's own producers always send them all.
OPTIONAL_DEFAULTS: dict[str, str] = {
    Header.SCHEMA: f"{SCHEMA_VERSION}",
    Header.REQUEST_ID: "the key (UTF-8, at most 256 characters), else topic/partition@offset",
    Header.PIPELINE: "the pipeline whose topic the record was read from",
    Header.STAGE: "the stage whose topic the record was read from",
    Header.CONTENT_TYPE: "sniffed from the value (JPEG, PNG, WebP, BMP)",
    Header.TRACEPARENT: "a new trace is started",
}
_READ_HEADERS = frozenset(str(h) for h in Header) - {
    Header.ERROR,
    Header.ERROR_STAGE,
    Header.SOURCE,
    Header.TRIMMED,
}
UNREADABLE_HEADERS = (
    "headers: a header name is not UTF-8 text, so this client cannot read any header of the "
    "record (they are not kept)"
)


class SchemaError(ValueError):
    """A record that is not a cvserve schema-v1 message; ``str()`` is the reason."""


class Record(NamedTuple):
    """A Kafka record as the clients send and receive it: key, value and headers; a consumed one
    also says where it was read (``source``, ``topic/partition@offset``) and, if its headers
    could not be read at all, why (``header_error``: it then has none)."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    source: str = ""
    header_error: str = ""

    @classmethod
    def consumed(cls, message: Any) -> Record:
        """The record of a message a (confluent-kafka) consumer returned. Never raises for what
        a producer wrote: a header name that is not UTF-8 makes confluent-kafka fail to build
        every header, so the record comes back without headers and with ``header_error``."""
        source = f"{message.topic()}/{message.partition()}@{message.offset()}"
        key, value = message.key(), message.value()
        try:
            headers = _read_headers(message)
        except (UnicodeDecodeError, SystemError, ValueError):
            return cls(key, value, [], source, UNREADABLE_HEADERS)
        return cls(key, value, list(headers or []), source)

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (what counts against the record limit)."""
        return (
            len(self.key or b"")
            + len(self.value or b"")
            + sum(len(_name_bytes(n)) + len(v or b"") + 2 for n, v in self.headers)
        )


# confluent-kafka's Message.headers() meets a name that is not UTF-8 by leaving the
# UnicodeDecodeError set and returning a list anyway. A plain ``message.headers()`` call, once
# the interpreter specialises it, does not check for that, and the error surfaces as a
# SystemError at some later call. Called through `operator.methodcaller` the C call path always
# checks and raises here.
_read_headers = operator.methodcaller("headers")


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def new_request_id() -> str:
    return uuid.uuid4().hex


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
    # Empty: the request id. Any bytes, held as text: undecodable bytes are kept as surrogates.
    key: str = ""
    original_size: tuple[int, int] | None = None  # (width, height)
    crop: Crop | None = None
    origin: str = ""  # topic/partition@offset of the record the first stage consumed
    input_digest: str = ""  # `input_digest` of the image the first stage consumed

    @property
    def record_key(self) -> str:
        return self.key or self.request_id

    @property
    def identity(self) -> tuple[str, int | None, str]:
        """(request id, crop index or None, input digest — else origin): what a reader drops
        duplicates by. A redelivered result and a producer's retry (the same request written
        twice, at two offsets) share it; two images sent under one id differ in their digest."""
        crop = None if self.crop is None else self.crop.index
        return (self.request_id, crop, self.input_digest or self.origin)

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

    def to_record(self, limits: MessageLimits = LIMITS) -> Record:
        """The record to send (hops bounded by ``limits``, oldest dropped)."""
        trace = self.trace.bounded(limits)
        headers = {
            Header.SCHEMA: str(SCHEMA_VERSION),
            Header.REQUEST_ID: self.request_id,
            Header.PIPELINE: self.pipeline,
            Header.STAGE: self.stage,
            Header.CONTENT_TYPE: self.content_type,
            Header.TRACEPARENT: trace.traceparent,
            Header.HOPS: encode_hops(trace.hops),
        }
        if trace.dropped:
            headers[Header.HOPS_DROPPED] = str(trace.dropped)
        if self.original_size is not None:
            headers[Header.ORIGINAL_SIZE] = "{}x{}".format(*self.original_size)
        if self.crop is not None:
            headers[Header.CROP_INDEX] = str(self.crop.index)
            headers[Header.CROP_BOX] = ",".join(str(v) for v in self.crop.box)
        if self.origin:
            headers[Header.ORIGIN] = self.origin
        if self.input_digest:
            headers[Header.INPUT_DIGEST] = self.input_digest
        return Record(
            self.record_key.encode("utf-8", "surrogateescape"),
            self.value,
            [(str(name), value.encode()) for name, value in headers.items()],
        )

    @classmethod
    def from_record(
        cls,
        record: Record,
        limits: MessageLimits = LIMITS,
        addressed: tuple[str, str] | None = None,
    ) -> Message:
        """Parse a received record; raises `SchemaError` naming the field that is wrong.

        Any producer's record is a request: only the value is required (`OPTIONAL_DEFAULTS`).
        ``addressed`` — the (pipeline, stage) the topic it was read from belongs to — stands in
        for absent ``pipeline`` / ``stage`` headers; the request id is the header, else the key
        (UTF-8, at most ``MAX_TEXT_CHARS``), else where the record was read
        (``topic/partition@offset``); the content type is sniffed from the value; a trace is
        started. A header that is present is checked as strictly as ever."""
        if record.header_error:
            raise SchemaError(record.header_error)
        raw = _cvserve_headers(record.headers)
        hops_raw = raw.pop(Header.HOPS, b"[]")
        if hops_raw is None:
            raise SchemaError(f"header {Header.HOPS}: null value")
        fields = {name: _short_text(name, value) for name, value in raw.items()}
        pipeline, stage = addressed or (None, None)
        pipeline = fields.get(Header.PIPELINE, pipeline)
        stage = fields.get(Header.STAGE, stage)
        missing = [
            str(h) for h, v in ((Header.PIPELINE, pipeline), (Header.STAGE, stage)) if v is None
        ]
        if missing:
            raise SchemaError(
                f"missing header(s) {', '.join(missing)} (and no topic says which pipeline stage)"
            )
        schema = fields.get(Header.SCHEMA, str(SCHEMA_VERSION))
        if schema != str(SCHEMA_VERSION):
            raise SchemaError(
                f"header {Header.SCHEMA}: schema version {schema!r}, this reader "
                f"knows {SCHEMA_VERSION}"
            )
        if record.value is None:
            raise SchemaError("value: none (a tombstone record carries no image)")
        key = record.key
        if key is not None and len(key) > limits.max_key_bytes:
            raise SchemaError(f"key: {len(key):,} bytes, at most {limits.max_key_bytes:,}")
        traceparent = fields.get(Header.TRACEPARENT)
        if traceparent is not None and not _TRACEPARENT.match(traceparent):
            raise SchemaError(
                f"header {Header.TRACEPARENT}: invalid traceparent {traceparent[:80]!r}"
            )
        for name in (Header.REQUEST_ID, Header.PIPELINE, Header.STAGE, Header.CONTENT_TYPE):
            if name in fields and not fields[name]:
                raise SchemaError(f"header {name}: empty")
        request_id = fields.get(Header.REQUEST_ID) or _request_id_of(key, record.source)
        try:
            hops, dropped = parse_hops(hops_raw, limits)
        except ValueError as exc:
            raise SchemaError(f"header {Header.HOPS}: {exc}") from exc
        dropped += _integer(Header.HOPS_DROPPED, fields.get(Header.HOPS_DROPPED, "0"), _INT64_MAX)
        size = _parse_size(fields.get(Header.ORIGINAL_SIZE))
        digest = fields.get(Header.INPUT_DIGEST, "")
        if digest and not _SHA256_HEX.fullmatch(digest):
            raise SchemaError(f"header {Header.INPUT_DIGEST}: not a hex SHA-256: {digest[:80]!r}")
        text_key = "" if key is None else key.decode("utf-8", "surrogateescape")
        return cls(
            request_id=request_id,
            pipeline=str(pipeline),
            stage=str(stage),
            value=bytes(record.value),
            content_type=fields.get(Header.CONTENT_TYPE) or sniffed_content_type(record.value),
            trace=TraceContext(
                traceparent or TraceContext.new().traceparent, hops, min(dropped, _INT64_MAX)
            ),
            key="" if text_key == request_id else text_key,
            original_size=size,
            crop=_parse_crop(fields, size),
            origin=fields.get(Header.ORIGIN, ""),
            input_digest=digest,
        )


def input_digest(value: bytes) -> str:
    """The ``input-digest`` of an image: its SHA-256, in lowercase hex."""
    return hashlib.sha256(value).hexdigest()


def _request_id_of(key: bytes | None, source: str) -> str:
    """A request id for a record without one: its key when that is short UTF-8 text, else where
    it was read (``topic/partition@offset``), else a new one."""
    if key:
        try:
            text = key.decode()
        except UnicodeDecodeError:
            text = ""
        if text and len(text) <= MAX_TEXT_CHARS:
            return text
    return source or new_request_id()


def sniffed_content_type(value: bytes) -> str:
    """The content type of an image's bytes (`preprocess.sniff`), ``UNKNOWN_CONTENT_TYPE`` when
    they are not one (the stage then dead-letters the record with sniff's reason)."""
    try:
        return IMAGE_CONTENT_TYPES.get(sniff(value).format, UNKNOWN_CONTENT_TYPE)
    except PreprocessError:
        return UNKNOWN_CONTENT_TYPE


def decode_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Every header as text (the last of repeated names wins); `SchemaError` naming the first
    header that is null or not UTF-8. For showing records; parsing reads cvserve's alone."""
    return {name: _text(name, raw) for name, raw in headers or ()}


def _cvserve_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, bytes | None]:
    """The headers cvserve reads, raw (the last of repeated names wins); others are ignored."""
    return {name: raw for name, raw in headers if name in _READ_HEADERS}


def _text(name: str, raw: bytes | None) -> str:
    if raw is None:
        raise SchemaError(f"header {name}: null value")
    try:
        text = raw.decode()
    except (UnicodeDecodeError, AttributeError) as exc:
        raise SchemaError(f"header {name}: not UTF-8 text ({exc})") from exc
    return text


def _short_text(name: str, raw: bytes | None) -> str:
    text = _text(name, raw)
    if len(text) > MAX_TEXT_CHARS:
        raise SchemaError(f"header {name}: {len(text):,} characters, at most {MAX_TEXT_CHARS}")
    return text


def _integer(name: str, raw: str, maximum: int, minimum: int = 0) -> int:
    if not _DECIMAL.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise SchemaError(
            f"header {name}: {raw[:40]!r} is not an integer from {minimum} to {maximum}"
        )
    return int(raw)


def _parse_size(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    parts = raw.split("x")
    if len(parts) != 2:
        raise SchemaError(f"header {Header.ORIGINAL_SIZE}: {raw[:40]!r} is not <width>x<height>")
    width, height = (_integer(Header.ORIGINAL_SIZE, p, MAX_SIDE, 1) for p in parts)
    return (width, height)


def _parse_crop(fields: Mapping[str, str], size: tuple[int, int] | None) -> Crop | None:
    index, box = fields.get(Header.CROP_INDEX), fields.get(Header.CROP_BOX)
    if index is None and box is None:
        return None
    if box is None:
        raise SchemaError(f"header {Header.CROP_BOX}: missing (a crop-index needs one)")
    if index is None:
        raise SchemaError(f"header {Header.CROP_INDEX}: missing (a crop-box needs one)")
    parts = box.split(",")
    if len(parts) != 4:
        raise SchemaError(f"header {Header.CROP_BOX}: {box[:40]!r} is not x1,y1,x2,y2")
    x1, y1, x2, y2 = (_integer(Header.CROP_BOX, p.strip(), MAX_SIDE) for p in parts)
    if not (x1 < x2 and y1 < y2):
        raise SchemaError(f"header {Header.CROP_BOX}: {box!r} is empty (needs x1 < x2, y1 < y2)")
    # original-size is the stored size; the box is in upright pixels (EXIF may swap the axes).
    if size is not None and not any(x2 <= w and y2 <= h for w, h in (size, size[::-1])):
        raise SchemaError(
            f"header {Header.CROP_BOX}: {box!r} lies outside the {size[0]}x{size[1]} image"
        )
    return Crop(_integer(Header.CROP_INDEX, index, MAX_CROPS - 1), (x1, y1, x2, y2))


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
    """The outputs of a result value written by `encode_outputs`; `SchemaError` saying what is
    wrong with anything else (not JSON, no outputs, a dtype that is not numeric, data that does
    not fill its shape)."""
    try:
        body = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise SchemaError(f"value: not JSON ({exc})") from exc
    tensors = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(tensors, dict):
        raise SchemaError('value: no "outputs" object of tensors')
    decoded = {}
    for name, tensor in tensors.items():
        try:
            dtype = np.dtype(tensor["dtype"])
            if dtype.kind not in "biuf":
                raise TypeError(f"dtype {dtype} is not numeric")
            array = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise SchemaError(f"value: output {name!r}: {type(exc).__name__}: {exc}") from exc
        decoded[name] = array
    return decoded


# What one input message becomes once a stage's ensemble answered (its outputs, the stage's
# name): results (content type RESULT_CONTENT_TYPE, sent to the results topic) and/or messages
# addressed to a later stage (sent to that stage's topic).
Emit = Callable[[Message, Mapping[str, np.ndarray], str], Sequence[Message]]


def result_message(source: Message, stage: str, outputs: Mapping[str, np.ndarray]) -> Message:
    """The result of ``source`` after ``stage``: same request, key, crop, origin and input
    digest, a child span."""
    return replace(
        source,
        stage=stage,
        value=encode_outputs(source, outputs),
        content_type=RESULT_CONTENT_TYPE,
        trace=source.trace.child(),
    )
