"""Stage workers between a real Kafka broker and a real Triton serving ``classify``.

Workers run as subprocesses (``python -m cvserve.pipelines.app.kafka_commands worker``) so that
SIGKILL and SIGTERM are real; each test has its own topic namespace.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from broker_testing import PIPELINE, small_jpegs, wait_until

from cvserve.broker.clients import new_producer
from cvserve.broker.lag import committed_offsets, pipeline_lag
from cvserve.broker.producer import ImageProducer, MessageTooLarge
from cvserve.broker.results import ResultReader, read_dead_letters
from cvserve.broker.schema import Header, Message, decode_headers, decode_outputs
from cvserve.broker.topics import Topics
from cvserve.deploy.kafka import KafkaBroker
from cvserve.deploy.kafka_limits import LIMITS
from cvserve.deploy.ports import free_port
from cvserve.models.client import PipelineClient
from cvserve.preprocess.synthetic import synthetic_image

pytestmark = [pytest.mark.kafka, pytest.mark.server]

LABELS, SCORES = "LABELS", "SCORES"


def direct_answers(triton_url: str, spec, images: list[bytes]) -> list[dict[str, np.ndarray]]:
    """What the ensemble answers when called directly, one image per request."""
    with PipelineClient(triton_url, spec) as client:
        return [
            {k: v[0] for k, v in client.infer([image], outputs=[LABELS, SCORES]).items()}
            for image in images
        ]


def assert_same_answer(result: Message, expected: dict[str, np.ndarray]) -> None:
    outputs = decode_outputs(result.value)
    np.testing.assert_array_equal(outputs[LABELS], expected[LABELS])
    np.testing.assert_allclose(outputs[SCORES], expected[SCORES], rtol=1e-4, atol=2e-6)


def results_reach(reader: ResultReader, count: int) -> bool:
    reader.poll()
    return reader.seen.added >= count


class PacedSubmitter(threading.Thread):
    """Submits ``images`` at ``rate`` per second in the background; ``ids`` fill as it goes."""

    def __init__(self, producer: ImageProducer, images: list[bytes], rate: float) -> None:
        super().__init__(daemon=True)
        self.producer, self.images, self.rate = producer, images, rate
        self.ids: list[str] = []
        self.futures: list[Future[None]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for n, image in enumerate(self.images):
                time.sleep(max(0.0, start + n / self.rate - time.monotonic()))  # pacing
                request_id, future = self.producer.send(image)
                self.ids.append(request_id)
                self.futures.append(future)
            self.producer.flush(timeout_s=180)
            for future in self.futures:
                future.result(timeout=0)
        except BaseException as exc:
            self.error = exc


def test_every_image_gets_one_result_equal_to_calling_the_ensemble(
    kafka: KafkaBroker, triton_url, classify_spec, start_worker, namespace, tmp_path: Path
) -> None:
    images = small_jpegs(12)
    (tmp_path / "folder").mkdir()
    paths = [tmp_path / "folder" / f"{n:02d}.jpg" for n in range(8)]
    paths += [tmp_path / f"glob{n}.jpg" for n in range(8, 12)]
    for path, image in zip(paths, images, strict=True):
        path.write_bytes(image)
    worker = start_worker(triton_url)
    common = ["--bootstrap", kafka.bootstrap, "--namespace", namespace, "--pipeline", PIPELINE]
    submitted = subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "submit",
         str(tmp_path / "folder"), str(tmp_path / "glob*.jpg"), *common],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    ids = dict(line.split("\t") for line in submitted.stdout.splitlines())
    assert sorted(Path(p) for p in ids.values()) == sorted(paths)

    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        results = reader.collect(ids, timeout_s=90)
    expected = dict(zip(paths, direct_answers(triton_url, classify_spec, images), strict=True))
    for request_id, (result,) in results.items():
        assert_same_answer(result, expected[Path(ids[request_id])])
        labels = [hop.label for hop in result.trace.hops]
        assert labels == [
            "submit",
            "classify.ready",
            "classify.consumed",
            "classify.dispatched",
            "classify.answered",
            "classify.emitting",
            "classify.produced",
            "results.ready",
            "results.consumed",
        ]
        times = [hop.t_ns for hop in result.trace.hops]
        assert times == sorted(times)

    assert worker.stop() == 0  # SIGTERM: finishes, commits, leaves the group
    lag = pipeline_lag(kafka.bootstrap, PIPELINE, namespace)
    assert sum(row.end for row in lag) == 12 and all(row.lag == 0 for row in lag)
    assert worker.stats().state == "stopped" and worker.stats().results == 12

    lag_table = subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "kafka", "lag", *common],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "total lag 0 message(s)" in lag_table.stdout, lag_table.stdout + lag_table.stderr
    metrics = subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "kafka", "lag", *common,
         "--format", "prometheus"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    samples = [
        line for line in metrics.splitlines() if line.startswith("cvserve_kafka_consumer_lag{")
    ]
    assert len(samples) == len(lag) and all(line.endswith(" 0") for line in samples), metrics

    printed = subprocess.run(
        [sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "results", *common,
         "--idle-timeout", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert {line["request_id"] for line in lines} == set(ids)


def test_sigkill_of_a_worker_mid_run_loses_no_result(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    workers = [start_worker(triton_url), start_worker(triton_url)]
    for worker in workers:
        worker.wait_stats(lambda s: s.state == "running", 60, "joining the group")
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        submitter = PacedSubmitter(producer, small_jpegs(40), rate=10)
        submitter.start()
        with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
            wait_until(lambda: results_reach(reader, 6), 60, "first results")
            victim, survivor = sorted(workers, key=lambda w: -(w.stats().consumed))
            assert victim.stats().consumed > 0
            victim.signal(signal.SIGKILL)
            victim.process.wait(timeout=10)
            submitter.join(timeout=60)
            assert submitter.error is None and len(submitter.ids) == 40
            reader.collect(submitter.ids, timeout_s=120)
    assert reader.seen.added == 40  # every request answered; duplicates were dropped
    assert survivor.process.poll() is None and survivor.stats().consumed > 0


def test_broker_restart_mid_run_loses_no_result(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    worker = start_worker(triton_url)
    worker.wait_stats(lambda s: s.state == "running", 60, "joining the group")
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        submitter = PacedSubmitter(producer, small_jpegs(30, first_seed=100), rate=8)
        submitter.start()
        with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
            wait_until(lambda: results_reach(reader, 5), 60, "first results")
            kafka.stop()
            kafka.start(timeout_s=120)
            submitter.join(timeout=180)
            assert submitter.error is None, submitter.error
            reader.collect(submitter.ids, timeout_s=150)
    assert reader.seen.added == 30
    assert worker.process.poll() is None


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny JPEG whose frame header claims ``width`` x ``height`` (a decompression bomb)."""
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + components
    return b"\xff\xd8" + sof + b"\xff\xd9"


def corrupt_png() -> bytes:
    """Passes the header checks; its pixel data cannot be inflated (the server refuses it)."""
    png = synthetic_image(64, 64, seed=5, fmt="png")
    start = png.index(b"IDAT") + 4
    return png[:start] + bytes(200) + png[start + 200 :]


def test_poison_messages_go_to_dead_letter_with_reasons_and_the_worker_keeps_going(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    worker = start_worker(triton_url)
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    good = small_jpegs(4, first_seed=200)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:

        def unchecked(value: bytes, **changes: str) -> Message:
            return dataclasses.replace(producer.message(value, validate=False), **changes)

        valid_jpeg = producer.message(good[0])
        wrong_version = [
            (k, b"7" if k == Header.SCHEMA else v) for k, v in valid_jpeg.to_record().headers
        ]
        # expected reason -> the poison record
        poison = {
            # Another producer's record: no header, so it is read as a bare image — not one.
            "not a recognised image (first bytes b'hello'": (b"no-headers", b"hello", []),
            "schema version '7'": (b"v7", valid_jpeg.value, wrong_version),
            "not a recognised image": unchecked(b"this is not an image").to_record(),
            "truncated JPEG": unchecked(good[1][: len(good[1]) // 2]).to_record(),
            "exceeds the limit": unchecked(jpeg_claiming(40_000, 40_000)).to_record(),
            "not 'classify' stage 'classify'": unchecked(good[2], stage="detect").to_record(),
            "rejected by Triton: ": unchecked(corrupt_png()).to_record(),
        }
        raw = new_producer(kafka.bootstrap)
        ids = []
        for n, (key, value, headers, *_) in enumerate(poison.values()):
            raw.produce(topic, value, key, headers=headers)
            ids.append(producer.send(good[n % len(good)])[0])  # good and bad interleaved
        assert raw.flush(30) == 0
        producer.flush()
        with pytest.raises(MessageTooLarge, match="exceeds the limit"):
            producer.submit([b"\xff" * (LIMITS.max_value_bytes + 1)])

    letters = read_dead_letters(kafka.bootstrap, PIPELINE, len(poison), 90, namespace)
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        assert len(reader.collect(ids, timeout_s=90)) == len(ids)
    by_key = {letter.key: letter for letter in letters}
    assert len(by_key) == len(poison)
    for expected, (key, value, *_) in poison.items():
        letter = by_key[key]
        headers = decode_headers(letter.headers)
        assert expected in headers[Header.ERROR]
        assert letter.value == value  # kept as received
        assert headers[Header.ERROR_STAGE] == PIPELINE and headers[Header.SOURCE].startswith(topic)
    stats = worker.wait_stats(lambda s: s.results == len(ids), 30, "all results counted")
    assert stats.dead_lettered == len(poison) and worker.process.poll() is None


def test_per_key_order_is_kept(kafka: KafkaBroker, triton_url, start_worker, namespace) -> None:
    start_worker(triton_url)
    start_worker(triton_url)
    sent: dict[str, list[str]] = {"camera-a": [], "camera-b": []}
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        for n, image in enumerate(small_jpegs(24, first_seed=300)):
            key = "camera-a" if n % 3 else "camera-b"
            sent[key].append(producer.send(image, key=key)[0])
        producer.flush()
    arrived: dict[str, list[str]] = {"camera-a": [], "camera-b": []}
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        deadline = time.monotonic() + 90
        while sum(map(len, arrived.values())) < 24 and time.monotonic() < deadline:
            for message in reader.poll():
                arrived[message.record_key].append(message.request_id)
    assert arrived == sent


def test_triton_unavailable_commits_nothing_and_the_group_redelivers(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    stranded = start_worker(closed)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        ids = producer.submit(small_jpegs(5, first_seed=400))
    stats = stranded.wait_stats(lambda s: s.retries >= 3, 60, "retrying against a dead Triton")
    assert stats.state == "retrying" and stats.in_flight >= 1 and stats.results == 0
    group = Topics(PIPELINE, namespace).group(PIPELINE)
    assert committed_offsets(kafka.bootstrap, group) == {}

    assert stranded.stop(timeout_s=30) == 0  # SIGTERM while Triton is down: abandon, no commit
    assert "left uncommitted" in stranded.log()
    assert committed_offsets(kafka.bootstrap, group) == {}
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        assert reader.poll(timeout_s=1.0) == []

        start_worker(triton_url)  # the same group, with a live Triton
        assert len(reader.collect(ids, timeout_s=90)) == 5
    wait_until(lambda: sum(committed_offsets(kafka.bootstrap, group).values()) == 5, 30, "commits")
