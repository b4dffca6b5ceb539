"""A result's identity is (request id, crop, digest of the input), not where it was read: a
producer's retry (the same request written twice, at two offsets) is read once, two images sent
under one id stay two results (no broker: records are handed to the reader as a transport
would)."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from broker_testing import small_jpegs

from cvserve.broker.producer import image_message
from cvserve.broker.results import UniqueResults
from cvserve.broker.routes import BrokerStage, Route
from cvserve.broker.schema import (
    Crop,
    Header,
    Message,
    Record,
    SchemaError,
    input_digest,
    result_message,
)
from cvserve.broker.stage_step import StageStep, StepRecord
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics

PIPELINE = "classify"
OUTPUTS = {"SCORES": np.array([0.5], np.float32)}


class Records:
    """A record source that returns the records given, once."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def poll(self, timeout_s: float) -> list[Record]:
        records, self.records = self.records, []
        return records

    def close(self) -> None:
        pass


def answered(image: bytes, origin: str, request_id: str = "r1", crop: Crop | None = None):
    """The result record a first stage writes for ``image`` read at ``origin``."""
    request = image_message(image, PIPELINE, PIPELINE)
    request = replace(
        request, request_id=request_id, origin=origin, input_digest=input_digest(image), crop=crop
    )
    return result_message(request, PIPELINE, OUTPUTS).to_record()


def read(records: list[Record]) -> UniqueResults:
    reader = UniqueResults(Records(records))
    reader.poll(0)
    return reader


def test_a_producer_retry_at_two_offsets_is_read_once() -> None:
    image = small_jpegs(1)[0]
    reader = read([answered(image, "in/0@4"), answered(image, "in/1@9")])
    assert [m.origin for m in reader.by_request["r1"]] == ["in/0@4"]
    assert (reader.seen.added, reader.duplicates) == (1, 1)


def test_two_images_under_one_id_stay_two_results() -> None:
    first, second = small_jpegs(2)
    reader = read([answered(first, "in/0@4"), answered(second, "in/0@5")])
    assert len(reader.by_request["r1"]) == 2 and reader.duplicates == 0


def test_crops_of_one_request_are_each_kept_and_each_read_once() -> None:
    image = small_jpegs(1)[0]
    crops = [answered(image, "in/0@4", crop=Crop(i, (0, 0, 8, 8))) for i in range(2)]
    reader = read([answered(image, "in/0@4"), *crops, *crops])
    assert len(reader.by_request["r1"]) == 3 and reader.duplicates == 2


def test_results_without_a_digest_are_told_apart_by_origin_as_before() -> None:
    image = small_jpegs(1)[0]
    old = [replace(Message.from_record(answered(image, o)), input_digest="") for o in ("a", "b")]
    reader = read([m.to_record() for m in old] + [old[0].to_record()])
    assert len(reader.by_request["r1"]) == 2 and reader.duplicates == 1


def test_the_digest_travels_with_the_record_and_a_malformed_one_is_refused() -> None:
    image = small_jpegs(1)[0]
    record = answered(image, "in/0@4")
    assert Message.from_record(record).input_digest == hashlib.sha256(image).hexdigest()
    forged = record._replace(
        headers=[(n, b"xyz" if n == Header.INPUT_DIGEST else v) for n, v in record.headers]
    )
    with pytest.raises(SchemaError, match="input-digest"):
        Message.from_record(forged)


def test_the_first_stage_sets_the_digest_of_what_it_read_and_a_later_stage_keeps_it() -> None:
    route = Route(PIPELINE, (BrokerStage(PIPELINE, PIPELINE), BrokerStage("next", "next")))
    topics = Topics(PIPELINE, "unit")
    image, other = small_jpegs(2)
    forged = replace(image_message(image, PIPELINE, PIPELINE), input_digest="0" * 64)
    later = replace(image_message(other, PIPELINE, "next"), origin="x", input_digest="1" * 64)
    items = [StepRecord(0, forged.to_record(), 0), StepRecord(1, later.to_record(), 0)]
    for item, stage in zip(items, (PIPELINE, "next"), strict=True):
        step = StageStep(route, stage, topics, WorkerStats(PIPELINE, stage, "g"))
        with ThreadPoolExecutor(1) as pool:
            step.answer([item], lambda v, i: OUTPUTS, pool, threading.Event())
    assert items[0].message.input_digest == input_digest(image)  # the producer's is replaced
    assert items[1].message.input_digest == "1" * 64
