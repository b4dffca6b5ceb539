"""The message schema without a broker: round trips and the reasons bad records are refused."""

from __future__ import annotations

import numpy as np
import pytest

from cvserve.broker.producer import image_message
from cvserve.broker.schema import (
    RESULT_CONTENT_TYPE,
    SCHEMA_VERSION,
    Crop,
    Header,
    Message,
    Record,
    SchemaError,
    TraceContext,
    dead_letter_record,
    decode_headers,
    decode_outputs,
    result_message,
)
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
    assert Message.from_record(*record) == message
    assert message.dedup_key == ("r1", 3)


def test_key_defaults_to_the_request_id() -> None:
    message = image_message(synthetic_image(32, 32), "classify", "classify")
    record = message.to_record()
    assert record.key == message.request_id.encode()
    again = Message.from_record(*record)
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
        (lambda h: {**h, Header.ORIGINAL_SIZE: "wide"}, "malformed header"),
        (lambda h: {**h, Header.HOPS: "[1"}, "malformed hops"),
    ],
)
def test_bad_records_are_refused_with_the_reason(edit, reason: str) -> None:
    key, value, headers = crop_message().to_record()
    fields = edit(decode_headers(headers))
    with pytest.raises(SchemaError, match=reason):
        Message.from_record(key, value, [(k, v.encode()) for k, v in fields.items()])


def test_non_utf8_header_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="not UTF-8"):
        Message.from_record(b"k", b"v", [("request-id", b"\xff\xfe")])


def test_result_outputs_decode_bit_for_bit() -> None:
    outputs = {
        "LABELS": np.array([3, 1, 999], dtype=np.int64),
        "SCORES": np.array([0.7, 0.2000001, 1e-9], dtype=np.float32),
        "EMBEDDING": np.random.default_rng(0).normal(size=(128,)).astype(np.float32),
    }
    result = result_message(crop_message(), "identify", outputs)
    assert result.content_type == RESULT_CONTENT_TYPE and result.is_result
    assert result.dedup_key == ("r1", 3) and result.stage == "identify"
    decoded = decode_outputs(Message.from_record(*result.to_record()).value)
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
