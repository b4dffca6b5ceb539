"""`broker.ensemble`: a failed Triton call is poison, retry-later or a server error by its gRPC
status code alone, and the caller and the stage worker act on that (no Triton, no broker: a
gRPC client that answers what each test says; one test calls a port where nothing listens)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from broker_testing import small_jpegs
from tritonclient.utils import InferenceServerException

import cvserve.broker.ensemble as ensemble
from cvserve.broker.ensemble import EnsembleCaller, InputRejected, TritonUnavailable, classify_error
from cvserve.broker.producer import image_message
from cvserve.broker.routes import single_ensemble
from cvserve.broker.schema import Record
from cvserve.broker.worker import StageWorker, _Work
from cvserve.broker.worker_config import WorkerConfig
from cvserve.deploy.ports import free_port


def error(status: str | None, message: str) -> InferenceServerException:
    """What tritonclient raises for a gRPC error: its ``status()`` is ``str(grpc.StatusCode)``."""
    return InferenceServerException(message, status=status)


# Wordings the text-matching classifier read, each under a status that says otherwise.
@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        # A bad image whose message names no PreprocessError: poison by its code.
        ("StatusCode.INVALID_ARGUMENT", "in ensemble 'classify', the moon is no image", "poison"),
        ("StatusCode.INVALID_ARGUMENT", "", "poison"),
        # The old poison marker under INTERNAL: a server error, retried a bounded number of times.
        ("StatusCode.INTERNAL", "PreprocessError: image 0: truncated JPEG", "server error"),
        # The old not-ready markers under a status that is no transient one.
        ("StatusCode.INTERNAL", "Request for unknown model: 'x' is not found", "server error"),
        ("StatusCode.UNKNOWN", "failed to connect to all addresses", "server error"),
        # Transient statuses whatever the words (none of the old markers here).
        ("StatusCode.UNAVAILABLE", "in ensemble 'classify', the stage is busy", "retry"),
        ("StatusCode.NOT_FOUND", "the model has no available versions", "retry"),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", "retry"),
        ("StatusCode.RESOURCE_EXHAUSTED", "", "retry"),
        # No status: tritonclient's own error before anything was sent.
        (None, "PreprocessError: unknown model failed to connect", "server error"),
    ],
)
def test_classification_reads_the_status_code_never_the_wording(
    status: str | None, message: str, expected: str
) -> None:
    got = classify_error(error(status, message))
    seen = (
        "retry"
        if isinstance(got, TritonUnavailable)
        else "poison"
        if isinstance(got, InputRejected) and got.poison
        else "server error"
    )
    assert seen == expected
    assert message in str(got)  # the server's words are kept for the dead letter and the log


class ScriptedClient:
    """A gRPC client of one-input ensembles whose ``infer`` answers each call with the next of
    ``answers``: an exception to raise, or outputs."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def get_model_metadata(self, model: str, **_: Any) -> dict[str, Any]:
        return {
            "inputs": [{"name": "IMAGE", "datatype": "UINT8"}],
            "outputs": [{"name": "LENGTH"}],
        }

    def infer(self, model: str, inputs: Any, **_: Any) -> Any:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


class Answer:
    def __init__(self, length: float) -> None:
        self.length = length

    def as_numpy(self, name: str) -> np.ndarray:
        return np.array([[self.length]], np.float32)


def scripted_caller(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> EnsembleCaller:
    client = ScriptedClient(answers)
    monkeypatch.setattr(ensemble, "grpc_client", lambda url: client)
    return EnsembleCaller("127.0.0.1:1", "classify")


def test_the_caller_raises_what_the_status_means(monkeypatch: pytest.MonkeyPatch) -> None:
    caller = scripted_caller(
        monkeypatch,
        [
            error("StatusCode.INVALID_ARGUMENT", "in ensemble 'classify', odd words"),
            error("StatusCode.UNAVAILABLE", "in ensemble 'classify', Exceeds maximum queue size"),
            error("StatusCode.INTERNAL", "in ensemble 'classify', KeyError: 'LOGITS'"),
            Answer(3.0),
        ],
    )
    with pytest.raises(InputRejected, match="odd words") as rejected:
        caller.infer(b"image")
    assert rejected.value.poison
    with pytest.raises(TritonUnavailable, match="StatusCode.UNAVAILABLE: .*queue size"):
        caller.infer(b"image")
    with pytest.raises(InputRejected, match="KeyError") as failed:
        caller.infer(b"image")
    assert not failed.value.poison
    assert caller.infer(b"image") == {"LENGTH": np.array([3.0], np.float32)}


def test_a_port_where_nothing_listens_is_unavailable_by_its_grpc_status() -> None:
    # gRPC gives a refused connection a status too (UNAVAILABLE): no message is read for it.
    caller = EnsembleCaller(f"127.0.0.1:{free_port()}", "classify", timeout_s=5.0)
    try:
        with pytest.raises(TritonUnavailable):
            caller.infer(b"image")
        assert not caller.ready()
    finally:
        caller.close()


class IdleConsumer:
    def poll(self, timeout: float) -> None:
        return None


def run_batch(caller: EnsembleCaller, attempts: int = 3) -> tuple[_Work, StageWorker]:
    """One record through a stage worker's Triton step (`StageWorker._infer`) with ``caller``."""
    config = WorkerConfig(retry_initial_s=0.01, retry_max_s=0.01, server_error_attempts=attempts)
    worker = StageWorker(
        "127.0.0.1:1", single_ensemble("classify"), "classify", "127.0.0.1:2", config
    )
    (image,) = small_jpegs(1)
    message = replace(image_message(image, "classify", "classify"), request_id="r1")
    item = _Work(("in", 0), 0, Record(None, image, []), 0, message=message)
    with ThreadPoolExecutor(1) as pool:
        worker._infer([item], caller, pool, threading.Event(), IdleConsumer())  # type: ignore[arg-type]
    return item, worker


def test_the_worker_dead_letters_a_bad_input_at_once_whatever_its_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = error("StatusCode.INVALID_ARGUMENT", "in ensemble 'classify', quite unusual words")
    caller = scripted_caller(monkeypatch, [refused, Answer(1.0)])
    item, worker = run_batch(caller)
    assert item.error == "rejected by Triton: in ensemble 'classify', quite unusual words"
    assert item.outputs is None and worker.stats.retries == 0
    assert caller._client.calls == 1  # never retried


def test_the_worker_retries_an_unavailable_stage_until_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy = error("StatusCode.UNAVAILABLE", "in ensemble 'classify', the stage is busy")
    loading = error("StatusCode.NOT_FOUND", "Request for unknown model: 'classify'")
    caller = scripted_caller(monkeypatch, [busy, loading, busy, busy, Answer(2.0)])
    item, worker = run_batch(caller, attempts=1)  # more tries than server errors would get
    assert item.error == "" and item.outputs == {"LENGTH": np.array([2.0], np.float32)}
    assert worker.stats.retries == 4


def test_the_worker_dead_letters_a_server_error_after_its_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The old poison wording under INTERNAL: retried, not poison.
    failed = error("StatusCode.INTERNAL", "PreprocessError: image 0: looked bad, was not")
    caller = scripted_caller(monkeypatch, [failed, failed, failed, Answer(1.0)])
    item, worker = run_batch(caller, attempts=3)
    assert item.error == "Triton error: PreprocessError: image 0: looked bad, was not"
    assert worker.stats.retries == 2 and caller._client.calls == 3
