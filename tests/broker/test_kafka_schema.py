"""The message schema without a broker: round trips and the reasons bad records are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest

from cvserve.broker.dead_letters import dead_letter_record
from cvserve.broker.producer import image_message
from cvserve.broker.schema import (
    RESULT_CONTENT_TYPE,
    SCHEMA_VERSION,
    UNREADABLE_HEADERS,
    Crop,
    Header,
    Message,
    Record,
    SchemaError,
    TraceContext,
    decode_headers,
    decode_outputs,
    result_message,
)
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.preprocess.spec import PreprocessError
from cvserve.preprocess.synthetic import synthetic_image


def crop_message() -> Message:
    return Message(
        request_id="r1",
        pipeline="detect_identify",
        stage="identify",
        value=b"\xff\xd8crop",
        content_type="image/jpeg",
        trace=TraceContext.new().hop("submit", 1).hop("detect.produced", 2),
        key="camera-7",
        original_size=(640, 480),
        crop=Crop(3, (10, 20, 110, 220)),
    )


def test_message_round_trips_through_a_record() -> None:
    message = crop_message()
    record = message.to_record()
    assert record.key == b"camera-7"
    assert decode_headers(record.headers)[Header.SCHEMA] == str(SCHEMA_VERSION)
    assert Message.from_record(record) == message
    assert message.identity == ("r1", 3, "")


def test_key_defaults_to_the_request_id() -> None:
    message = image_message(synthetic_image(32, 32), "classify", "classify")
    record = message.to_record()
    assert record.key == message.request_id.encode()
    again = Message.from_record(record)
    assert again.key == "" and again.record_key == message.request_id
    assert again.original_size == (32, 32) and again.content_type == "image/jpeg"
    assert [h.label for h in again.trace.hops] == ["submit"]


def test_image_message_refuses_what_sniff_refuses_unless_told_not_to() -> None:
    with pytest.raises(PreprocessError, match="not a recognised image"):
        image_message(b"plain text", "classify", "classify")
    message = image_message(b"plain text", "classify", "classify", validate=False)
    assert message.content_type == "application/octet-stream" and message.original_size is None


def test_a_child_span_keeps_the_trace_and_hops() -> None:
    trace = TraceContext.new().hop("submit")
    child = trace.child()
    assert child.trace_id == trace.trace_id and child.hops == trace.hops
    assert child.traceparent != trace.traceparent


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda h: {}, "missing header"),
        (lambda h: {**h, Header.SCHEMA: "2"}, "schema version '2'"),
        (lambda h: {**h, Header.TRACEPARENT: "nonsense"}, "invalid traceparent"),
        (lambda h: {**h, Header.ORIGINAL_SIZE: "wide"}, "header original-size: 'wide' is not"),
        (lambda h: {**h, Header.HOPS: "[1"}, "header hops: not a JSON list"),
    ],
)
def test_bad_records_are_refused_with_the_reason(edit, reason: str) -> None:
    record = crop_message().to_record()
    fields = edit(decode_headers(record.headers))
    with pytest.raises(SchemaError, match=reason):
        Message.from_record(
            Record(record.key, record.value, [(k, v.encode()) for k, v in fields.items()])
        )


def test_non_utf8_header_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="not UTF-8"):
        Message.from_record(Record(b"k", b"v", [("request-id", b"\xff\xfe")]))


def test_result_outputs_decode_bit_for_bit() -> None:
    outputs = {
        "LABELS": np.array([3, 1, 999], dtype=np.int64),
        "SCORES": np.array([0.7, 0.2000001, 1e-9], dtype=np.float32),
        "EMBEDDING": np.random.default_rng(0).normal(size=(128,)).astype(np.float32),
    }
    result = result_message(crop_message(), "identify", outputs)
    assert result.content_type == RESULT_CONTENT_TYPE and result.is_result
    assert result.identity == ("r1", 3, "") and result.stage == "identify"
    decoded = decode_outputs(Message.from_record(result.to_record()).value)
    for name, array in outputs.items():
        assert decoded[name].dtype == array.dtype
        np.testing.assert_array_equal(decoded[name], array)


def test_dead_letter_keeps_the_record_and_adds_the_reason() -> None:
    received = Record(b"k", b"junk", [("x", b"y")])
    letter = dead_letter_record(received, "not an image", "classify", "topic/2@17")
    assert letter.key == b"k" and letter.value == b"junk"
    headers = decode_headers(letter.headers)
    assert headers["x"] == "y" and headers[Header.ERROR] == "not an image"
    assert headers[Header.ERROR_STAGE] == "classify" and headers[Header.SOURCE] == "topic/2@17"


CROP_MESSAGE = crop_message()


def record_with(**changes: bytes | None) -> Record:
    """A valid crop record (of `CROP_MESSAGE`) with some headers replaced (``None``: a null
    value) or added."""
    record = CROP_MESSAGE.to_record()
    names = {name.replace("_", "-"): value for name, value in changes.items()}
    headers = [(n, v) for n, v in record.headers if n not in names]
    return Record(record.key, record.value, [*headers, *names.items()])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # Finding 8: each reason names the header (it used to say "'NoneType' object has no
        # attribute 'decode'", "not enough values to unpack", or raise OverflowError).
        ({"request_id": None}, "header request-id: null value"),
        ({"pipeline": b"\xff"}, "header pipeline: not UTF-8 text"),
        ({"original_size": b"abc"}, "header original-size: 'abc' is not <width>x<height>"),
        ({"original_size": b"0x5"}, "header original-size: '0' is not an integer from 1"),
        ({"hops": b'[["submit", 1e400]]'}, "header hops: not a JSON list"),
        ({"hops": b'[["submit", 99999999999999999999]]'}, "header hops: hop time 99999"),
        (
            {"hops": b'[["submit", 9999999999999999999]]'},
            "header hops: hop time 9999999999999999999",
        ),
        ({"hops": b'{"a": 1}'}, "header hops: not a JSON list"),
        ({"hops": None}, "header hops: null value"),
        ({"hops_dropped": b"-3"}, "header hops-dropped: '-3' is not an integer"),
        # Finding 5: crop indices are validated (-1 used to collide with the uncropped result).
        ({"crop_index": b"-1"}, "header crop-index: '-1' is not an integer from 0 to 65535"),
        ({"crop_index": b"65536"}, "header crop-index: '65536' is not an integer"),
        ({"crop_box": None}, "header crop-box: null value"),
        ({"crop_box": b"1,2,3"}, "header crop-box: '1,2,3' is not x1,y1,x2,y2"),
        ({"crop_box": b"50,50,10,60"}, "header crop-box: '50,50,10,60' is empty"),
        ({"crop_box": b"10,20,700,220"}, "lies outside the 640x480 image"),
        ({"traceparent": b"00-xyz"}, "header traceparent: invalid traceparent"),
        ({"request_id": b""}, "header request-id: empty"),
        ({"request_id": b"r" * 300}, "header request-id: 300 characters, at most 256"),
    ],
)
def test_each_bad_header_is_refused_with_a_reason_naming_it(changes, reason: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(reason)):
        Message.from_record(record_with(**changes))


def test_a_crop_index_without_its_box_is_refused() -> None:
    record = crop_message().to_record()
    headers = [(n, v) for n, v in record.headers if n != Header.CROP_BOX]
    with pytest.raises(SchemaError, match="header crop-box: missing"):
        Message.from_record(Record(record.key, record.value, headers))


def test_headers_cvserve_does_not_use_are_never_read() -> None:
    """Finding 8: any bytes (or none) in another producer's headers pass."""
    message = Message.from_record(
        record_with(x_binary=b"\xff\xfe\x00", x_null=None, x_big=b"z" * 100_000)
    )
    assert message == CROP_MESSAGE


def test_keys_are_any_bytes_up_to_the_limit() -> None:
    record = crop_message().to_record()
    binary = Message.from_record(Record(b"\xff\x00cam", record.value, record.headers))
    assert binary.to_record().key == b"\xff\x00cam"  # round-trips byte for byte
    with pytest.raises(SchemaError, match="key: 4,097 bytes, at most 4,096"):
        Message.from_record(Record(b"k" * 4097, record.value, record.headers))
    with pytest.raises(SchemaError, match="value: none"):
        Message.from_record(Record(record.key, None, record.headers))


def test_hops_are_bounded_oldest_dropped_and_counted() -> None:
    """Finding 3/7: a compact hops header of any size is read into at most ``max_hops``; hops
    are written compactly, so a result never outgrows its input by its trace."""
    compact = b"[" + b",".join(b'["h.%d",%d]' % (n, n) for n in range(200_000)) + b"]"
    message = Message.from_record(record_with(hops=compact, hops_dropped=b"5"))
    assert [h.t_ns for h in message.trace.hops] == list(range(200_000 - LIMITS.max_hops, 200_000))
    assert message.trace.dropped == 200_000 - LIMITS.max_hops + 5
    record = message.with_hop("classify.consumed").to_record()
    fields = decode_headers(record.headers)
    assert len(fields[Header.HOPS]) <= LIMITS.max_hops_bytes and ", " not in fields[Header.HOPS]
    assert int(fields[Header.HOPS_DROPPED]) == message.trace.dropped + 1
    wide = [[f"{'x' * 250}.{n}", n] for n in range(60)]  # few hops, many bytes
    bounded = Message.from_record(record_with(hops=json.dumps(wide).encode()))
    assert bounded.trace.dropped > 0
    assert len(decode_headers(bounded.to_record().headers)[Header.HOPS]) <= LIMITS.max_hops_bytes


def test_hop_labels_follow_json_string_rules() -> None:
    hops = json.dumps([["café.consumed", 5], ['q"uote', 6]]).encode()  # \u00e9 and \" escapes
    message = Message.from_record(record_with(hops=hops))
    assert [h.label for h in message.trace.hops] == ["café.consumed", 'q"uote']


def test_result_values_that_are_not_outputs_are_schema_errors() -> None:
    for value, reason in [
        (b"not json", "value: not JSON"),
        (b'{"outputs": []}', 'value: no "outputs" object'),
        (b'{"outputs": {"A": {"dtype": "object", "shape": [1], "data": [1]}}}', "not numeric"),
        (b'{"outputs": {"A": {"dtype": "int64", "shape": [3], "data": [1]}}}', "output 'A'"),
        (b'{"outputs": {"A": {"dtype": "int8", "shape": [1], "data": [1e400]}}}', "output 'A'"),
    ]:
        with pytest.raises(SchemaError, match=re.escape(reason)):
            decode_outputs(value)


def test_a_dead_letter_too_large_for_a_record_is_trimmed_with_digests() -> None:
    limits = MessageLimits(max_message_bytes=20_000)
    value, big_header = b"v" * 15_000, b"h" * 19_800
    received = Record(b"key", value, [("x-big", big_header), ("x-small", b"s")])
    letter = dead_letter_record(received, "not an image", "classify", "t/0@1", limits)
    assert letter.size + 512 <= limits.max_message_bytes
    headers = decode_headers(letter.headers)
    trimmed = json.loads(headers[Header.TRIMMED])
    assert letter.value is None and letter.key == b"key" and headers["x-small"] == "s"
    assert trimmed["value"] == {"bytes": 15_000, "sha256": hashlib.sha256(value).hexdigest()}
    assert trimmed["headers"] == [
        {"name": "x-big", "bytes": 19_800, "sha256": hashlib.sha256(big_header).hexdigest()}
    ]
    assert headers[Header.ERROR] == "not an image" and headers[Header.SOURCE] == "t/0@1"
    unreadable = Record(b"k", b"v", [], "t/0@2", UNREADABLE_HEADERS)
    with pytest.raises(SchemaError, match="a header name is not UTF-8"):
        Message.from_record(unreadable)


def test_identity_tells_apart_requests_that_share_an_id() -> None:
    first = dataclasses.replace(crop_message(), origin="in/0@1")
    assert first.identity == ("r1", 3, "in/0@1")
    assert dataclasses.replace(first, origin="in/0@2").identity != first.identity
    assert dataclasses.replace(first, crop=None).identity == ("r1", None, "in/0@1")
    assert Message.from_record(first.to_record()).identity == first.identity


@pytest.mark.parametrize(
    "hops",
    [
        b'[["submit", 1], ["classify.consumed", 2]]',
        b'[["caf\\u00e9", 3]]',
        b' [ ["a" , 1] ] ',
        b'[["submit", 1e400]]',
        b'[["submit", -1]]',
        b'[["submit", 1, 2]]',
        b'[["submit", true]]',
        b"[[5, 1]]",
        b'{"submit": 1}',
        b'[["submit", 1]',
    ],
)
def test_small_and_huge_hops_headers_are_judged_alike(hops: bytes) -> None:
    """A header is parsed whole when small and streamed when large: the same verdict."""
    padding = b"[" + b",".join(b'["pad",%d]' % n for n in range(4000))
    huge = padding + b"," + hops.strip()[1:]
    assert len(huge) > 4 * LIMITS.max_hops_bytes
    verdicts = []
    for raw in (hops, huge):
        try:
            verdicts.append(Message.from_record(record_with(hops=raw)).trace.hops[-1:])
        except SchemaError:
            verdicts.append("refused")
    assert verdicts[0] == verdicts[1]


JPEG = synthetic_image(64, 48, 1)
ADDRESSED = ("classify", "classify")


def test_a_bare_image_is_a_request_addressed_by_its_topic() -> None:
    keyed = Message.from_record(Record(b"cam1", JPEG, [], "t.in/0@7"), addressed=ADDRESSED)
    assert (keyed.request_id, keyed.record_key, keyed.key) == ("cam1", "cam1", "")
    assert (keyed.pipeline, keyed.stage, keyed.content_type) == (
        "classify",
        "classify",
        "image/jpeg",
    )
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", keyed.trace.traceparent)
    # No key (or one that is no short UTF-8 text): where it was read is its request id.
    for key in (None, b"", b"\xff\xfe", b"k" * 300):
        bare = Message.from_record(Record(key, JPEG, [], "t.in/0@8"), addressed=ADDRESSED)
        assert bare.request_id == "t.in/0@8", key
    # Traces are not shared between bare records.
    other = Message.from_record(Record(b"cam1", JPEG, [], "t.in/0@9"), addressed=ADDRESSED)
    assert other.trace.trace_id != keyed.trace.trace_id


def test_headers_a_producer_gives_win_over_the_defaults() -> None:
    traceparent = TraceContext.new().traceparent
    headers = [
        (Header.REQUEST_ID, b"r-42"),
        (Header.CONTENT_TYPE, b"image/png"),
        (Header.TRACEPARENT, traceparent.encode()),
    ]
    message = Message.from_record(Record(b"cam1", JPEG, headers, "t/0@1"), addressed=ADDRESSED)
    assert (message.request_id, message.key, message.content_type) == ("r-42", "cam1", "image/png")
    assert message.trace.traceparent == traceparent
    # Present but wrong is still refused, however the record came.
    for name, value, reason in (
        (Header.TRACEPARENT, b"00-xyz", "invalid traceparent"),
        (Header.REQUEST_ID, b"", "header request-id: empty"),
        (Header.SCHEMA, b"9", "schema version '9'"),
    ):
        with pytest.raises(SchemaError, match=reason):
            Message.from_record(Record(None, JPEG, [(name, value)]), addressed=ADDRESSED)


def test_without_a_topic_to_say_so_pipeline_and_stage_are_needed() -> None:
    with pytest.raises(SchemaError, match=r"missing header\(s\) pipeline, stage"):
        Message.from_record(Record(b"k", JPEG, []))
    with pytest.raises(SchemaError, match="value: none"):
        Message.from_record(Record(b"k", None, []), addressed=ADDRESSED)


def test_bytes_that_are_no_image_get_the_unknown_content_type() -> None:
    message = Message.from_record(Record(b"k", b"hello", []), addressed=ADDRESSED)
    assert message.content_type == "application/octet-stream"
