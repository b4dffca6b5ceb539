"""Times a stage reports in its results across a broker (`profiling.kafkatrace.reported_times`)
and the run's line when a running server's ensembles do not return them
(`profiling.kafkasweep.unreported`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from stage_times_testing import stage_row

from cvserve.broker.schema import Crop, Message, result_message
from cvserve.models.fusion import fuse_stages
from cvserve.pipelines.catalog import classify
from cvserve.pipelines.variants import (
    FUSED_PARTS,
    PREPROCESS_TIMES,
    STAGE_TIMES,
    own_times,
    reported_stage_times,
)
from cvserve.profiling.kafkasweep import as_profiled, unreported
from cvserve.profiling.kafkatrace import reported_times

SOURCE = Message("rid", "p", "detect", b"jpeg", "image/jpeg")


def test_each_call_gets_the_times_its_own_result_carries() -> None:
    fused = np.array([stage_row(pre=5, dnn=7, post=1)])
    first = result_message(SOURCE, "detect", {STAGE_TIMES.name: fused, "COUNT": np.array([1])})
    apart = {
        PREPROCESS_TIMES.name: np.array([[2, 3, 4]]),
        own_times("preprocess").name: np.array([stage_row(pre=9)]),
        own_times("inference").name: np.array([stage_row(dnn=6)]),
    }
    crop = replace(result_message(SOURCE, "identify", apart), crop=Crop(0, (0, 0, 8, 8)))
    plain = replace(
        result_message(SOURCE, "identify", {"EMBEDDING": np.zeros(4)}), crop=Crop(1, (0, 0, 8, 8))
    )
    times = reported_times([first, crop, plain])
    assert times == {
        "rid": {STAGE_TIMES.name: stage_row(pre=5, dnn=7, post=1)},
        "rid:0": {
            PREPROCESS_TIMES.name: [2, 3, 4],
            own_times("preprocess").name: stage_row(pre=9),
            own_times("inference").name: stage_row(dnn=6),
        },
    }
    # What join_request hands to attach_triton: the stages' own times added up.
    assert reported_stage_times(times["rid:0"]) == stage_row(pre=9, dnn=6)
    assert reported_stage_times(times["rid"]) == stage_row(pre=5, dnn=7, post=1)


class _RunningServer:
    """A server whose ensembles return their answers only (no time tensors), or also
    ``times`` (name → shape)."""

    def __init__(self, times: dict[str, list[str]] | None = None) -> None:
        self.times = times or {}

    def get_model_metadata(self, name: str, as_json: bool) -> dict:
        times = [{"name": n, "shape": shape} for n, shape in self.times.items()]
        return {"outputs": [{"name": "LABELS"}, {"name": "SCORES"}, *times]}


def test_a_running_server_without_the_time_tensors_is_said() -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=4)
    profiled = as_profiled(fuse_stages(spec), split_preprocess=True)
    (note,) = unreported(_RunningServer(), [profiled])
    missing = note.split(" as served returns no ")[1].split(":")[0]
    assert missing == f"{STAGE_TIMES.name}, {PREPROCESS_TIMES.name}"
    # Apart, each stage's own time is asked; one line names them all.
    (note,) = unreported(_RunningServer(), [as_profiled(spec)])
    assert all(own_times(role).name in note for role in FUSED_PARTS), note
    assert unreported(_RunningServer(), [spec]) == []  # nothing asked of it
    # A fused model built by an earlier cvserve returns its times in another layout: said.
    fused = as_profiled(fuse_stages(spec))
    earlier = _RunningServer({STAGE_TIMES.name: ["-1", "3"]})
    (note,) = unreported(earlier, [fused])
    assert f"returns {STAGE_TIMES.name} in another layout" in note and "repo build" in note
    current = _RunningServer({STAGE_TIMES.name: ["-1", str(STAGE_TIMES.dims[0])]})
    assert unreported(current, [fused]) == []
