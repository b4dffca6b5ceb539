"""Hostile records against live stage workers and `cvserve results` (real Kafka, real Triton).

Each test crafts records as another producer could (confluent-kafka with any key, value and
headers; kcat for header names that are not UTF-8), then sends a good image that must still be
answered: no record stops a worker, wedges a partition or loses a result. The README's Kafka
section lists what a record may hold; the findings these tests cover are in its docstrings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from broker_testing import (
    PIPELINE,
    RawProducer,
    peak_rss_mb,
    small_jpegs,
    wait_until,
)
from served_models import SLOW_MODEL_SECONDS

from cvserve.broker.lag import committed_offsets
from cvserve.broker.producer import ImageProducer
from cvserve.broker.results import ResultReader, TopicReader
from cvserve.broker.schema import (
    Crop,
    Header,
    Message,
    Record,
    decode_headers,
    result_message,
)
from cvserve.broker.topics import Topics, ensure_topics
from cvserve.broker.worker_config import WorkerConfig
from cvserve.deploy.kafka import DEFAULT_PARTITIONS, KafkaBroker
from cvserve.deploy.kafka_limits import LIMITS, MIB

pytestmark = [pytest.mark.kafka, pytest.mark.server]
HUGE_HOPS = 850_000  # ["p.s",1000000000], ...: 16.2 MB of hops, 17.9 MB with ", " separators


def good_record(producer: ImageProducer, image: bytes, key: str = "") -> Record:
    return producer.message(image, key=key).to_record()


def with_headers(record: Record, **changes: bytes | None) -> list[tuple[str, bytes | None]]:
    """``record``'s headers with some replaced (``None`` value: a null header; names with
    ``_`` for ``-``)."""
    names = {name.replace("_", "-"): value for name, value in changes.items()}
    kept = [(n, v) for n, v in record.headers if n not in names]
    return [*kept, *names.items()]


def header(record: Record, name: str) -> str:
    """The (last) value of header ``name`` as text; the record's other headers may be anything."""
    return [v for n, v in record.headers if n == name][-1].decode()


def dead_letters_by_source(bootstrap: str, namespace: str, count: int) -> dict[str, Record]:
    topic = Topics(PIPELINE, namespace).dead_letter
    letters: dict[str, Record] = {}
    deadline = time.monotonic() + 120
    with TopicReader(bootstrap, topic) as reader:
        while len(letters) < count and time.monotonic() < deadline:
            for letter in reader.poll():
                letters[header(letter, Header.SOURCE)] = letter
    assert len(letters) >= count, f"{len(letters)} of {count} dead letters after 120 s"
    return letters


def results_by_origin(bootstrap: str, namespace: str, count: int, pipeline: str = PIPELINE):
    """Every record on the results topic (not de-duplicated), by origin, once ``count`` came."""
    results: dict[str, list[Message]] = {}
    deadline = time.monotonic() + 120
    with TopicReader(bootstrap, Topics(pipeline, namespace).results) as reader:
        while sum(map(len, results.values())) < count and time.monotonic() < deadline:
            for record in reader.poll():
                message = Message.from_record(record)
                results.setdefault(message.origin, []).append(message)
        for record in reader.poll(timeout_s=2.0):  # anything more would be a duplicate
            message = Message.from_record(record)
            results.setdefault(message.origin, []).append(message)
    assert sum(map(len, results.values())) >= count, f"{len(results)} of {count} results"
    return results


# Runs a command and writes its peak RSS (KB, getrusage of its only child) to argv[1].
_PEAK_RSS = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(done.returncode)"
)


def cvserve_results(bootstrap: str, namespace: str, tmp_path: Path, pipeline: str = PIPELINE):
    """``cvserve results`` run to its idle timeout: (exit code, JSON lines, stderr, peak RSS MB)."""
    peak_file = tmp_path / f"peak-{time.monotonic_ns()}"
    command = [
        sys.executable, "-c", _PEAK_RSS, str(peak_file),
        sys.executable, "-m", "cvserve.pipelines.app.kafka_commands", "results",
        "--bootstrap", bootstrap, "--namespace", namespace, "--pipeline", pipeline,
        "--idle-timeout", "3",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, lines, done.stderr, int(peak_file.read_text()) / 1024


def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_readers_go_on(
    kafka: KafkaBroker, triton_url, start_worker, namespace, tmp_path: Path
) -> None:
    """Finding 1: confluent-kafka cannot build such a record's headers; the worker and
    ``cvserve results`` used to exit on it (and on every restart)."""
    worker = start_worker(triton_url)
    topics = Topics(PIPELINE, namespace)
    image_file = tmp_path / "image.jpg"
    image_file.write_bytes(small_jpegs(1, first_seed=500)[0])
    raw = RawProducer(kafka.bootstrap)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        first = producer.submit(small_jpegs(1, first_seed=501))
        valid = good_record(producer, image_file.read_bytes())
        headers = [(n.encode(), v) for n, v in valid.headers] + [(b"\xff\xfename", b"v")]
        raw.send_with_kcat(topics.stage_in(PIPELINE), b"bad-name", image_file, headers)
        raw.send_with_kcat(topics.results, b"bad-name", image_file, headers)
        after = producer.submit(small_jpegs(1, first_seed=502))
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        assert len(reader.collect([*first, *after], timeout_s=90)) == 2
    (letter,) = dead_letters_by_source(kafka.bootstrap, namespace, 1).values()
    assert letter.key == b"bad-name" and letter.value == image_file.read_bytes()
    assert "a header name is not UTF-8" in decode_headers(letter.headers)[Header.ERROR]
    assert worker.process.poll() is None

    for _ in range(2):  # a later run reads the same records again: same answer
        code, lines, err, _ = cvserve_results(kafka.bootstrap, namespace, tmp_path)
        assert code == 0, err
        assert {line["request_id"] for line in lines} == {*first, *after}
        assert "skipped" in err and "a header name is not UTF-8" in err


def test_records_at_the_broker_limit_are_answered_or_get_a_trimmed_dead_letter(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    """Finding 2: a poison record near 16 MiB made a dead letter too large to produce (the
    worker exited, or re-read the batch forever and the partition's other keys waited)."""
    worker = start_worker(triton_url)
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    raw = RawProducer(kafka.bootstrap)
    rng = random.Random(7)
    sent: dict[str, bytes] = {}
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        template = good_record(producer, small_jpegs(1, first_seed=510)[0])
        ids = []
        for n, spare in enumerate((1_000, 40_000, 70_000)):  # at, near and just under the limit
            value = rng.randbytes(LIMITS.max_message_bytes - spare)  # not an image
            sent[raw.send(topic, f"big-{n}".encode(), value, template.headers)] = value
            ids += producer.submit(small_jpegs(1, first_seed=511 + n))
        # A valid image in a record at the limit (an unknown header fills it): answered.
        padding = [("x-padding", b"p" * (LIMITS.max_message_bytes - 40_000))]
        full = good_record(producer, small_jpegs(1, first_seed=520)[0])
        full_source = raw.send(topic, full.key, full.value, [*full.headers, *padding])
    letters = dead_letters_by_source(kafka.bootstrap, namespace, len(sent))
    for source, value in sent.items():
        headers = decode_headers(letters[source].headers)
        reason = headers[Header.ERROR]  # the value limit of an image, or not an image
        assert reason.startswith(("MessageTooLarge", "PreprocessError")), reason
        assert letters[source].key is not None
        if letters[source].value is None:  # trimmed: the value's size and digest are kept
            trimmed = json.loads(headers[Header.TRIMMED])["value"]
            assert trimmed == {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
        else:
            assert letters[source].value == value
    assert any(letter.value is None for letter in letters.values())
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        assert len(reader.collect(ids, timeout_s=90)) == len(ids)
    assert len(results_by_origin(kafka.bootstrap, namespace, len(ids) + 1)[full_source]) == 1
    assert worker.process.poll() is None


def test_valid_records_with_huge_hops_and_odd_keys_are_answered_within_the_limits(
    kafka: KafkaBroker, triton_url, start_worker, namespace, tmp_path: Path
) -> None:
    """Findings 3 and 7: a compact 15 MB hops header from another producer made the result
    larger than the input (the worker crashed) and took the worker to GBs of memory."""
    worker = start_worker(triton_url)
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    raw = RawProducer(kafka.bootstrap)
    hops = b"[" + b",".join(b'["p.s",%d]' % (10**9 + n) for n in range(HUGE_HOPS)) + b"]"
    assert len(hops) > 16_000_000 and len(hops) < LIMITS.max_value_bytes
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        producer.submit(small_jpegs(2, first_seed=530))  # warm: the baseline includes Triton calls
        worker.wait_stats(lambda s: s.results == 2, 60, "warm-up answered")
        baseline = peak_rss_mb(worker.process.pid)
        sources = {}
        for n, image in enumerate(small_jpegs(16, first_seed=540)):
            record = good_record(producer, image)
            sources[raw.send(topic, record.key, record.value, with_headers(record, hops=hops))] = n
        empty_key = good_record(producer, small_jpegs(1, first_seed=560)[0])
        empty_source = raw.send(topic, b"", empty_key.value, empty_key.headers)
        long_key = good_record(producer, small_jpegs(1, first_seed=561)[0])
        long_source = raw.send(topic, b"k" * MIB, long_key.value, long_key.headers)
        after = producer.submit(small_jpegs(1, first_seed=562))
    results = results_by_origin(kafka.bootstrap, namespace, 2 + 16 + 1 + 1)
    for source in sources:
        (result,) = results[source]
        kept = len(result.trace.hops)
        assert kept <= LIMITS.max_hops
        assert result.trace.dropped == HUGE_HOPS + 6 - kept  # and this stage's six
        assert result.trace.hops[-1].label == "classify.produced"
        assert result.to_record().size < 20_000
    assert len(results[empty_source]) == 1
    (letter,) = dead_letters_by_source(kafka.bootstrap, namespace, 1).values()
    assert decode_headers(letter.headers)[Header.SOURCE] == long_source
    assert decode_headers(letter.headers)[Header.ERROR].startswith("SchemaError: key: 1,048,576")
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        reader.collect(after, timeout_s=60)
    growth = peak_rss_mb(worker.process.pid) - baseline
    bound = WorkerConfig().record_memory_bytes(DEFAULT_PARTITIONS, LIMITS) / MIB
    assert growth < bound, f"worker peak RSS grew {growth:.0f} MB (bound {bound:.0f} MB)"

    # The same 15 MB hops on results another producer wrote: `cvserve results` stays bounded.
    _, lines, _, small_peak = cvserve_results(kafka.bootstrap, namespace, tmp_path)
    assert len(lines) == 2 + 16 + 1 + 1
    results_topic = Topics(PIPELINE, namespace).results
    for line in lines[:8]:
        result = results[line["origin"]][0].to_record()
        raw.send(results_topic, result.key, result.value, with_headers(result, hops=hops))
    code, lines, err, peak = cvserve_results(kafka.bootstrap, namespace, tmp_path)
    assert code == 0 and len(lines) == 20, err  # the same results again: duplicates dropped
    assert all(len(line["hops"]) <= LIMITS.max_hops + 2 for line in lines)  # + the reader's
    bound = TopicReader.record_memory_bytes(DEFAULT_PARTITIONS, LIMITS) / MIB
    growth = peak - small_peak
    assert growth < bound, f"cvserve results peak RSS grew {growth:.0f} MB (bound {bound:.0f})"
    assert worker.process.poll() is None


def test_cvserve_results_skips_what_is_not_a_result_and_prints_every_valid_one(
    kafka: KafkaBroker, namespace, tmp_path: Path
) -> None:
    """Finding 4: a results record that is not JSON, lacks outputs, has a hop at 1e400 ns, a
    crop index without its box, or a header name that is not UTF-8 ended ``cvserve results``
    with a traceback, and every later run skipped the valid results read before it."""
    topics = Topics(PIPELINE, namespace)
    ensure_topics(kafka.bootstrap, topics.all([PIPELINE]))
    raw = RawProducer(kafka.bootstrap)
    request = Message("req", PIPELINE, PIPELINE, b"", "image/jpeg", origin="in/0@1")
    valid = result_message(request, PIPELINE, {"SCORES": np.array([0.5], np.float32)})
    record = valid.to_record()
    bad = {
        "value: not JSON": (record.value[:-7], record.headers),
        'value: no "outputs"': (b'{"schema": 1}', record.headers),
        "header hops: not a JSON list": (
            record.value,
            with_headers(record, hops=b'[["classify.produced",1e400]]'),
        ),
        "header crop-box: missing": (record.value, with_headers(record, crop_index=b"2")),
    }
    before = raw.send(topics.results, b"before", record.value, record.headers)
    for value, headers in bad.values():
        raw.send(topics.results, b"bad", value, headers)
    value_file = tmp_path / "result.json"
    value_file.write_bytes(record.value)
    kcat_headers = [(n.encode(), v) for n, v in record.headers] + [(b"\xc3\x28", b"x")]
    raw.send_with_kcat(topics.results, b"bad-name", value_file, kcat_headers)
    second = dataclasses.replace(valid, request_id="req2")
    after = raw.send(topics.results, b"after", second.value, second.to_record().headers)
    for _ in range(2):  # the same answer on every run
        code, lines, err, _ = cvserve_results(kafka.bootstrap, namespace, tmp_path)
        assert code == 0, err
        assert sorted(line["request_id"] for line in lines) == ["req", "req2"], err
        assert all(line["outputs"] == {"SCORES": [0.5]} for line in lines)
        for reason in [*bad, "a header name is not UTF-8"]:
            assert reason in err, err
        assert "5 record(s) that are not results skipped" in err
        assert before and after


def test_requests_sharing_an_id_are_both_answered_and_crop_indices_are_checked(
    kafka: KafkaBroker, triton_url, start_worker, namespace, tmp_path: Path
) -> None:
    """Finding 5: the same request id with two images gave two results but readers printed
    one; a crop index of -1 collided with the uncropped result."""
    start_worker(triton_url)
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    raw = RawProducer(kafka.bootstrap)
    images = small_jpegs(4, first_seed=570)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:

        def request(image: bytes, **changes: object) -> Message:
            return dataclasses.replace(producer.message(image), request_id="shared", **changes)

        twice = [producer.send_message(request(image)) for image in images[:2]]
        producer.wait(twice, timeout_s=60)
        crop = request(images[2], crop=Crop(0, (0, 0, 16, 16)))
        producer.wait([producer.send_message(crop)], timeout_s=60)
        minus_one = request(images[3]).to_record()
        minus_one_source = raw.send(
            topic,
            minus_one.key,
            minus_one.value,
            with_headers(minus_one, crop_index=b"-1", crop_box=b"0,0,16,16"),
        )
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        wait_until(
            lambda: reader.poll() is not None and len(reader.by_request.get("shared", [])) == 3,
            90,
            "three results of request id 'shared'",
        )
        results = reader.by_request["shared"]
    assert len({m.origin for m in results}) == 3
    assert sorted(m.crop.index if m.crop else -1 for m in results) == [-1, -1, 0]
    (letter,) = dead_letters_by_source(kafka.bootstrap, namespace, 1).values()
    headers = decode_headers(letter.headers)
    assert headers[Header.SOURCE] == minus_one_source
    assert "header crop-index: '-1' is not an integer" in headers[Header.ERROR]
    code, lines, err, _ = cvserve_results(kafka.bootstrap, namespace, tmp_path)
    assert code == 0 and [line["request_id"] for line in lines] == ["shared"] * 3, err


def test_a_producer_retry_is_answered_twice_but_read_and_printed_once(
    kafka: KafkaBroker, triton_url, start_worker, namespace, tmp_path: Path
) -> None:
    """A producer that timed out writes the same request (id, trace, image) again at another
    offset: the worker answers both records, readers keep one; another image under the same id
    stays a result of its own (identity by request id, crop and input digest)."""
    start_worker(triton_url)
    first, second = small_jpegs(2, first_seed=820)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        retried = producer.message(first)
        other = dataclasses.replace(producer.message(second), request_id=retried.request_id)
        sent = [producer.send_message(m) for m in (retried, retried, other)]
        producer.wait(sent, timeout_s=60)
    on_topic = results_by_origin(kafka.bootstrap, namespace, 3)
    assert len(on_topic) == 3  # answered at three offsets
    with ResultReader(kafka.bootstrap, PIPELINE, namespace) as reader:
        wait_until(
            lambda: reader.poll() is not None and reader.duplicates == 1,
            90,
            "the retried request read once",
        )
        assert len(reader.by_request[retried.request_id]) == 2
    code, lines, err, _ = cvserve_results(kafka.bootstrap, namespace, tmp_path)
    assert code == 0 and [line["request_id"] for line in lines] == [retried.request_id] * 2, err
    assert "1 duplicate(s) dropped" in err


def test_a_triton_slower_than_the_poll_interval_answers_each_request_once(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    """Finding 6: a batch slower than ``max.poll.interval.ms`` got the worker evicted, its
    commit refused and the batch redone in a loop (lag stuck, three results per request)."""
    interval_ms = 6000
    assert interval_ms / 1000 * 2 < SLOW_MODEL_SECONDS * 2
    worker = start_worker(
        triton_url, "--pipeline", "slow", "--max-poll-interval-ms", str(interval_ms)
    )
    worker.wait_stats(lambda s: s.state == "running", 60, "joining the group")
    with ImageProducer(kafka.bootstrap, "slow", namespace) as producer:
        ids = producer.submit(small_jpegs(2, first_seed=580))  # one batch: 2 × 8 s in Triton
    group = Topics("slow", namespace).group("slow")
    wait_until(
        lambda: sum(committed_offsets(kafka.bootstrap, group).values()) == 2,
        120,
        "the batch committed",
    )
    results = results_by_origin(kafka.bootstrap, namespace, 2, pipeline="slow")
    assert sorted(m.request_id for found in results.values() for m in found) == sorted(ids)
    stats = worker.stats()
    assert stats.consumed == 2 and stats.results == 2 and stats.revoked == 0, stats
    assert "commit refused" not in worker.log() and worker.process.poll() is None


# Mutations that make a record poison, and what its dead letter's reason must say.
BREAKING = {
    "PreprocessError": (lambda r, rng: (r.key, rng.randbytes(rng.randrange(1, 5000)), r.headers)),
    "value: none": (lambda r, rng: (r.key, None, r.headers)),
    "key: ": (lambda r, rng: (rng.randbytes(rng.randrange(4097, 70_000)), r.value, r.headers)),
    "header request-id: null value": (
        lambda r, rng: (r.key, r.value, with_headers(r, request_id=None))
    ),
    "header request-id: not UTF-8": (
        lambda r, rng: (r.key, r.value, with_headers(r, request_id=b"\xff" + rng.randbytes(8)))
    ),
    "header cvserve-schema": (
        lambda r, rng: (r.key, r.value, with_headers(r, cvserve_schema=b"x"))
    ),
    "header traceparent": (
        lambda r, rng: (
            r.key,
            r.value,
            with_headers(r, traceparent=rng.randbytes(55).hex()[:55].encode()),
        )
    ),
    "header hops": (
        lambda r, rng: (
            r.key,
            r.value,
            with_headers(r, hops=b"{" + rng.randbytes(rng.randrange(1, 3000))),
        )
    ),
    "header original-size": (
        lambda r, rng: (
            r.key,
            r.value,
            with_headers(r, original_size=b"%dy%d" % (rng.randrange(9), 3)),
        )
    ),
    "header crop-box: missing": (lambda r, rng: (r.key, r.value, with_headers(r, crop_index=b"1"))),
    "header crop-index": (
        lambda r, rng: (r.key, r.value, with_headers(r, crop_index=b"-1", crop_box=b"0,0,8,8"))
    ),
    "addressed to": (lambda r, rng: (r.key, r.value, with_headers(r, stage=b"detect"))),
}


def harmless(record: Record, rng: random.Random) -> tuple:
    """Another producer's extras that must not matter: unknown headers (any names, bytes of any
    size or null), any key up to the limit, a longer trace."""
    headers = list(record.headers)
    for _ in range(rng.randrange(0, 6)):
        name = "".join(
            chr(rng.choice([rng.randrange(33, 127), rng.randrange(160, 0xD7FF)]))
            for _ in range(rng.randrange(1, 30))
        )
        value = None if rng.random() < 0.2 else rng.randbytes(rng.choice([0, 10, 3000, 60_000]))
        headers.insert(rng.randrange(len(headers) + 1), (name, value))
    if rng.random() < 0.3:
        hops = json.dumps([[f"other.{n}", n] for n in range(rng.randrange(1, 300))]).encode()
        headers = with_headers(Record(record.key, record.value, headers), hops=hops)
    if rng.random() < 0.3:  # another producer leaves out headers it need not send
        optional = {"cvserve-schema", "content-type", "traceparent", "pipeline", "stage"}
        dropped = set(rng.sample(sorted(optional), rng.randrange(1, len(optional) + 1)))
        headers = [(n, v) for n, v in headers if n not in dropped]
    key = rng.randbytes(rng.choice([0, 1, 16, 4096])) if rng.random() < 0.5 else record.key
    return key, record.value, headers


def test_a_few_hundred_random_records_good_ones_answered_once_the_rest_dead_lettered(
    kafka: KafkaBroker, triton_url, start_worker, namespace, tmp_path: Path
) -> None:
    """Property-style: random header names, values and sizes mixed with good images."""
    worker = start_worker(triton_url)
    topic = Topics(PIPELINE, namespace).stage_in(PIPELINE)
    raw = RawProducer(kafka.bootstrap)
    rng = random.Random(11)
    good: set[str] = set()
    poison: dict[str, str] = {}  # source -> expected reason
    images = small_jpegs(8, first_seed=600)
    with ImageProducer(kafka.bootstrap, PIPELINE, namespace) as producer:
        for n in range(240):
            record = good_record(producer, images[n % len(images)])
            if n % 2:
                reason = rng.choice(sorted(BREAKING))
                poison[raw.send(topic, *BREAKING[reason](record, rng))] = reason
            else:
                good.add(raw.send(topic, *harmless(record, rng)))
    image_file = tmp_path / "image.jpg"
    image_file.write_bytes(images[0])
    for n in range(3):  # header names that are not UTF-8 (kcat: confluent-kafka cannot send them)
        record = good_record(producer, images[0])
        headers = [(k.encode(), v) for k, v in record.headers] + [(b"x\xff%d" % n, b"v")]
        raw.send_with_kcat(topic, b"kcat-%d" % n, image_file, headers)
    results = results_by_origin(kafka.bootstrap, namespace, len(good))
    assert set(results) == good
    assert all(len(found) == 1 for found in results.values())  # exactly once
    letters = dead_letters_by_source(kafka.bootstrap, namespace, len(poison) + 3)
    for source, reason in poison.items():
        assert reason in header(letters[source], Header.ERROR), source
    unreadable = [s for s in letters if s not in poison]
    assert len(unreadable) == 3
    stats = worker.wait_stats(lambda s: s.consumed == 243, 60, "every record consumed")
    assert stats.results == len(good) and stats.dead_lettered == len(poison) + 3
    assert worker.process.poll() is None


def test_a_rebalance_mid_batch_leaves_the_batch_to_the_new_owner_and_wedges_nothing(
    kafka: KafkaBroker, triton_url, start_worker, namespace
) -> None:
    """Finding 6, the other half: when the group moves partitions while a slow batch is in
    hand, their records are left unsent and uncommitted for the new owner (not re-run blindly
    into duplicate results), and no partition stays paused after the rebalance."""
    first = start_worker(triton_url, "--pipeline", "slow")
    first.wait_stats(lambda s: s.state == "running", 60, "joining the group")
    with ImageProducer(kafka.bootstrap, "slow", namespace) as producer:
        ids = producer.submit(small_jpegs(2, first_seed=590))
        first.wait_stats(lambda s: s.in_flight > 0, 60, "a batch in hand")
        second = start_worker(triton_url, "--pipeline", "slow")  # the group rebalances
        ids += producer.submit(small_jpegs(2, first_seed=592))
    results = results_by_origin(kafka.bootstrap, namespace, 4, pipeline="slow")
    assert sorted(m.request_id for found in results.values() for m in found) == sorted(ids)
    assert all(len(found) == 1 for found in results.values())  # once each, none re-run
    group = Topics("slow", namespace).group("slow")
    wait_until(lambda: sum(committed_offsets(kafka.bootstrap, group).values()) == 4, 120, "commits")
    stats = [first.stats(), second.stats()]
    assert sum(s.results for s in stats) == 4 and first.stats().revoked > 0, stats
    assert first.process.poll() is None and second.process.poll() is None
