"""The stage step without a transport: records in, what to produce and commit out (no broker, no
Triton: the ensemble is a plain function that answers, raises `TritonUnavailable` or raises
`InputRejected`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from broker_testing import small_jpegs

from cvserve.broker.ensemble import InputRejected, TritonUnavailable
from cvserve.broker.producer import image_message
from cvserve.broker.routes import BrokerStage, Route, single_ensemble
from cvserve.broker.schema import Header, Message, decode_headers, decode_outputs, hop_label
from cvserve.broker.stage_step import BatchAbandoned, StageStep, StepRecord
from cvserve.broker.stats import WorkerStats
from cvserve.broker.topics import Topics
from cvserve.broker.worker_config import WorkerConfig

PIPELINE = "classify"
TOPICS = Topics(PIPELINE, "unit")
QUICK = WorkerConfig(retry_initial_s=0.01, retry_max_s=0.02, server_error_attempts=3)
SCORES = np.array([0.25, 0.75], np.float32)


def answer(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
    return {"SCORES": SCORES}


def new_step(route: Route | None = None, config: WorkerConfig = QUICK) -> StageStep:
    route = route or single_ensemble(PIPELINE)
    stats = WorkerStats(route.pipeline, route.first.name, TOPICS.group(route.first.name))
    return StageStep(route, route.first.name, TOPICS, stats, config)


def request(seed: int = 0, position: object = None) -> StepRecord:
    message = image_message(small_jpegs(1, first_seed=seed)[0], PIPELINE, PIPELINE)
    record = message.to_record()._replace(source=f"in/0@{seed}")
    return StepRecord(seed if position is None else position, record, ready_ns=0)


def garbage(position: object) -> StepRecord:
    return StepRecord(position, request().record._replace(value=b"not an image"), ready_ns=0)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def run(
    step: StageStep,
    batch: list[StepRecord],
    infer: Callable[[bytes, str], Mapping[str, np.ndarray]],
    pool: ThreadPoolExecutor,
    stop: threading.Event | None = None,
    keep_alive: Callable[[], None] = lambda: None,
):
    return step.run(batch, infer, pool, stop or threading.Event(), keep_alive)


def error_of(record) -> str:
    return decode_headers(record.headers)[Header.ERROR]


def test_a_good_record_becomes_one_result_and_its_position_is_committed(pool) -> None:
    step = new_step()
    outcome = run(step, [request(position=("in", 0, 7))], answer, pool)
    [(topic, record)] = outcome.produce
    assert topic == TOPICS.results
    result = Message.from_record(record)
    assert result.is_result and result.request_id == outcome.items[0].message.request_id
    np.testing.assert_array_equal(decode_outputs(result.value)["SCORES"], SCORES)
    labels = [h.label for h in result.trace.hops]
    for event in ("consumed", "dispatched", "answered", "emitting", "produced"):
        assert hop_label(PIPELINE, event) in labels
    assert outcome.commit == [("in", 0, 7)]
    assert (step.stats.consumed, step.stats.retries, step.stats.state) == (1, 0, "running")


def test_a_poison_record_is_dead_lettered_without_a_call_and_still_committed(pool) -> None:
    calls: list[str] = []

    def counting(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
        calls.append(call_id)
        return answer(value, call_id)

    step = new_step()
    outcome = run(step, [garbage("bad"), request(seed=1, position="good")], counting, pool)
    assert [topic for topic, _ in outcome.produce] == [TOPICS.dead_letter, TOPICS.results]
    letter = outcome.produce[0][1]
    assert "PreprocessError" in error_of(letter) and letter.value == b"not an image"
    assert decode_headers(letter.headers)[Header.ERROR_STAGE] == PIPELINE
    assert len(calls) == 1  # only the good one reached the ensemble
    assert outcome.commit == ["bad", "good"]


def test_an_input_the_server_rejects_as_poison_is_dead_lettered_at_once(pool) -> None:
    calls: list[str] = []

    def rejecting(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
        calls.append(call_id)
        raise InputRejected("PreprocessError: truncated JPEG", poison=True)

    outcome = run(new_step(), [request()], rejecting, pool)
    [(topic, letter)] = outcome.produce
    assert topic == TOPICS.dead_letter
    assert error_of(letter) == "rejected by Triton: PreprocessError: truncated JPEG"
    assert len(calls) == 1 and outcome.commit == [0]


def test_a_transient_failure_is_retried_then_answered(pool) -> None:
    failures = iter([TritonUnavailable("StatusCode.UNAVAILABLE: starting")] * 2)
    alive: list[int] = []

    def flaky(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
        error = next(failures, None)
        if error is not None:
            raise error
        return answer(value, call_id)

    step = new_step()
    outcome = run(step, [request()], flaky, pool, keep_alive=lambda: alive.append(1))
    assert [topic for topic, _ in outcome.produce] == [TOPICS.results]
    assert step.stats.retries == 2 and "starting" in step.stats.last_error
    assert step.stats.state == "running" and step.stats.in_flight == 0
    assert alive, "the transport was kept alive while the step waited"
    # The dispatch is stamped at the try that answered: one hop, not one per try.
    hops = [h.label for h in outcome.items[0].message.trace.hops]
    assert hops.count(hop_label(PIPELINE, "dispatched")) == 1


def test_a_server_error_is_tried_a_few_times_then_dead_lettered(pool) -> None:
    calls: list[str] = []

    def failing(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
        calls.append(call_id)
        raise InputRejected("model crashed", poison=False)

    outcome = run(new_step(), [request()], failing, pool)
    [(topic, letter)] = outcome.produce
    assert topic == TOPICS.dead_letter and error_of(letter) == "Triton error: model crashed"
    assert len(calls) == QUICK.server_error_attempts


def test_stopping_while_triton_is_unavailable_abandons_the_batch(pool) -> None:
    def down(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
        raise TritonUnavailable("StatusCode.UNAVAILABLE: connection refused")

    stop = threading.Event()
    stop.set()
    with pytest.raises(BatchAbandoned, match="left uncommitted"):
        run(new_step(), [request()], down, pool, stop=stop)


def test_a_client_side_failure_dead_letters_only_its_own_record(pool) -> None:
    bad = request(seed=3).record
    bad_id = Message.from_record(bad).call_id

    def picky(value: bytes, call_id: str) -> Mapping[str, np.ndarray]:
        if call_id == bad_id:
            raise OSError("socket closed")
        return answer(value, call_id)

    outcome = run(new_step(), [request(seed=2), StepRecord(3, bad, 0)], picky, pool)
    assert [topic for topic, _ in outcome.produce] == [TOPICS.results, TOPICS.dead_letter]
    assert error_of(outcome.produce[1][1]) == "calling Triton failed: OSError: socket closed"


def fan_out(message: Message, outputs: Mapping[str, np.ndarray], stage: str) -> list[Message]:
    """A result and one crop for ``identify`` (the image itself)."""
    from cvserve.broker.schema import result_message

    return [result_message(message, stage, outputs), replace(message, stage="identify")]


def test_a_fan_out_stage_addresses_its_crops_to_the_next_stage(pool) -> None:
    route = Route(
        PIPELINE, (BrokerStage(PIPELINE, PIPELINE, fan_out), BrokerStage("identify", "identify"))
    )
    outcome = run(new_step(route), [request()], answer, pool)
    assert [topic for topic, _ in outcome.produce] == [TOPICS.results, TOPICS.stage_in("identify")]


def test_an_emit_that_fails_dead_letters_its_input(pool) -> None:
    def broken(message: Message, outputs: Mapping[str, np.ndarray], stage: str) -> list[Message]:
        raise KeyError("BOXES")

    route = Route(PIPELINE, (BrokerStage(PIPELINE, PIPELINE, broken),))
    outcome = run(new_step(route), [request()], answer, pool)
    [(topic, letter)] = outcome.produce
    assert topic == TOPICS.dead_letter and error_of(letter) == "emit failed: KeyError: 'BOXES'"


def test_delivered_outputs_are_counted_by_where_they_went() -> None:
    step = new_step()
    step.count_delivered([TOPICS.results, TOPICS.dead_letter, TOPICS.stage_in("identify")])
    assert (step.stats.results, step.stats.dead_lettered, step.stats.forwarded) == (1, 1, 1)
