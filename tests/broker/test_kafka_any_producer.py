"""Any producer's image is a request: kcat and a plain librdkafka producer send bare JPEGs (a key
or not, no cvserve header) to a stage's topic on the real broker and get answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from broker_testing import PIPELINE, require_tool, small_jpegs, wait_until

from cvserve.broker.clients import new_producer
from cvserve.broker.results import ResultReader
from cvserve.broker.schema import decode_outputs
from cvserve.broker.topics import Topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.preprocess.tensors import LABELS, SCORES

pytestmark = [pytest.mark.kafka, pytest.mark.server]


def test_bare_jpegs_from_kcat_and_a_plain_producer_are_answered(
    kafka: KafkaBroker, triton_url: str, start_worker, namespace: str, tmp_path: Path
) -> None:
    kcat = require_tool("kcat", "apt-get install kcat")
    start_worker(triton_url)
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    frames = small_jpegs(4, first_seed=900)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(frames[0])
    # kcat -P sends each file named as one record: the JPEG as the value, a key, no headers.
    command = [kcat, "-b", kafka.bootstrap, "-P", "-t", topic, "-k", "cam1", str(photo)]
    subprocess.run(command, check=True, timeout=60, capture_output=True)
    raw = new_producer(kafka.bootstrap)  # librdkafka, nothing of cvserve's on the record
    for frame in frames[1:3]:  # a camera: every frame keyed by its id
        raw.produce(topic, frame, b"cam2")
    raw.produce(topic, frames[3])  # neither key nor headers
    assert raw.flush(30) == 0

    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        found = reader.collect(["cam1", "cam2"], timeout_s=120)
        unkeyed = wait_until(
            lambda: reader.poll(0.2) is not None
            and [rid for rid in reader.by_request if rid.startswith(f"{topic}/")],
            120,
            "the result of the record without key",
        )
        wait_until(
            lambda: reader.poll(0.2) is not None and len(reader.by_request["cam2"]) == 2,
            60,
            "one result per frame of cam2",
        )
    (kcat_result,) = found["cam1"]
    # With only a key, the key is the request id, and the result is keyed the same way.
    assert kcat_result.request_id == "cam1" and kcat_result.record_key == "cam1"
    assert kcat_result.origin.startswith(f"{topic}/")
    outputs = decode_outputs(kcat_result.value)  # the classify answer: top-k labels and scores
    assert outputs[SCORES].size > 0 and outputs[SCORES].shape == outputs[LABELS].shape
    # A camera's frames share their key: one result per frame, told apart by where each was read.
    cam2 = reader.by_request["cam2"]
    assert len({m.origin for m in cam2}) == 2 and all(m.record_key == "cam2" for m in cam2)
    # No key: the request id is where the record was read, topic/partition@offset.
    (request_id,) = unkeyed
    (result,) = reader.by_request[request_id]
    assert request_id == result.origin and "@" in request_id
    # A trace was started for each: every result carries a valid traceparent and the hops.
    for message in (kcat_result, *cam2, result):
        assert message.trace.traceparent.startswith("00-")
        assert any(hop.label == f"{PIPELINE}.consumed" for hop in message.trace.hops)
