"""cvserve's DALI preprocessing stage beside the same DALI graph run bare, side by side.

*Bare*: `preprocess.dali_graph.preprocess_graph` in a pipeline fed by an ``external_source``
iterator, with DALI's own prefetching (``prefetch_queue_depth`` 2) and its outputs left where
DALI puts them — what DALI alone does with the graph; a round ends with nothing in flight.
*Stage*: what the served preprocessing stage does with a Triton batch of one-image requests
(`models.triton.preprocess`, without Triton): the zero-padded byte rows each unpadded and
sniffed, the graph run once on the batch, each request's pixels (a view of the batch) and META
handed on. Both run the same images at the same batch and threads, in alternating rounds
(`profiling.bench.rounds`); stage / bare is taken per round. The bare pipeline is a benchmark
row, not a second preprocessing implementation: it runs the product's graph.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.dali_graph import HW_DECODER_LOAD, preprocess_graph
from cvserve.preprocess.preprocessor import stack_results
from cvserve.preprocess.spec import PreprocessSpec
from cvserve.preprocess.tensors import pad_images
from cvserve.profiling.bench.rounds import Spread, alternating_rounds, per_round_ratios

Step = Callable[[], Any]  # one batch through, returning when its outputs are there


class BarePipeline:
    """The graph run bare on ``images`` cycled in batches of ``batch``, with DALI's prefetching
    (`PREFETCH` iterations in flight). A measurement leaves none in flight when it ends, so no
    work of one round runs inside the next round's window (a side by side would lend it to
    whichever runs after)."""

    PREFETCH = 2  # DALI's default prefetch_queue_depth

    def __init__(
        self,
        spec: PreprocessSpec,
        images: Sequence[bytes],
        batch: int,
        threads: int,
        device: Literal["cpu", "gpu"] = "cpu",
        hw_decoder_load: float = HW_DECODER_LOAD,
    ) -> None:
        from nvidia.dali import fn, pipeline_def, types

        arrays = [np.frombuffer(i, np.uint8) for i in images]
        cycled = itertools.cycle(arrays)

        def source() -> Any:
            while True:
                yield [next(cycled) for _ in range(batch)]

        @pipeline_def(
            batch_size=batch,
            num_threads=threads,
            device_id=0 if device == "gpu" else None,
            prefetch_queue_depth=self.PREFETCH,
        )
        def pipeline() -> Any:
            encoded = fn.external_source(source=source(), dtype=types.UINT8, ndim=1)
            return preprocess_graph(encoded, spec, device, hw_decoder_load)

        self.batch = batch
        self.pipe = pipeline()
        self.pipe.build()
        self.started = False

    def _fill(self) -> None:
        """Put `PREFETCH` iterations in flight (DALI's first call schedules them all)."""
        if not self.started:
            self.pipe.schedule_run()
            self.started = True
            return
        for _ in range(self.PREFETCH):
            self.pipe.schedule_run()

    def first(self) -> tuple[Any, Any]:
        """One batch's ``(pixels, meta)`` DALI outputs (the in-flight rest consumed)."""
        self._fill()
        outputs = self.pipe.outputs()
        for _ in range(self.PREFETCH - 1):
            self.pipe.outputs()
        return outputs

    def images_per_s(self, min_time_s: float) -> float:
        """Images/s over at least ``min_time_s`` (and two batches), every batch it started
        finished inside the window."""
        start = time.perf_counter()
        self._fill()
        calls = 0
        while calls < 2 or time.perf_counter() - start < min_time_s:
            self.pipe.outputs()
            self.pipe.schedule_run()
            calls += 1
        for _ in range(self.PREFETCH):
            self.pipe.outputs()
        return (calls + self.PREFETCH) * self.batch / (time.perf_counter() - start)


def stage_step(
    spec: PreprocessSpec,
    images: Sequence[bytes],
    batch: int,
    threads: int,
    device: Literal["cpu", "gpu"] = "cpu",
    hw_decoder_load: float = HW_DECODER_LOAD,
) -> Step:
    """The served stage's work on a Triton batch of ``batch`` one-image requests."""
    pre = DaliPreprocessor(
        spec, batch, num_threads=threads, device=device, hw_decoder_load=hw_decoder_load
    )
    cycled = itertools.cycle(images)
    batches = [pad_images([next(cycled) for _ in range(batch)]) for _ in range(4)]
    rows = itertools.cycle(batches)

    def step() -> list[Any]:
        results = pre(list(next(rows)))
        answers = [stack_results([r]) for r in results]
        if device == "gpu":
            import torch

            torch.cuda.synchronize()
        return answers

    return step


def images_per_s(step: Step, batch: int, min_time_s: float) -> float:
    """``step``'s images/s over at least ``min_time_s`` (and two batches)."""
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_time_s:
        step()
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def stage_vs_bare(
    spec: PreprocessSpec,
    images: Sequence[bytes],
    batch: int,
    threads: int,
    rounds: int,
    min_time_s: float,
    device: Literal["cpu", "gpu"] = "cpu",
    hw_decoder_load: float = HW_DECODER_LOAD,
) -> dict[str, Any]:
    """Stage and bare on the same ``images`` and ``batch``, alternating ``rounds``: images/s
    per round and stage / bare as the median of the per-round ratios with its spread."""
    stage = stage_step(spec, images, batch, threads, device, hw_decoder_load)
    bare = BarePipeline(spec, images, batch, threads, device, hw_decoder_load)
    stage()  # warm-up: buffers at full size, threads started
    bare.first()
    parts = {
        "stage": lambda _round: images_per_s(stage, batch, min_time_s),
        "bare": lambda _round: bare.images_per_s(min_time_s),
    }
    measured = alternating_rounds(rounds, parts)
    stage = [m["stage"] for m in measured]
    bare = [m["bare"] for m in measured]
    return {
        "batch": batch,
        "device": device,
        "hw_decoder_load": hw_decoder_load if device == "gpu" else None,
        "stage_images_per_s": Spread.of(stage).median,
        "bare_images_per_s": Spread.of(bare).median,
        "ratio": Spread.of(per_round_ratios(stage, bare)).to_dict(),
        "rounds": [dict(m, round=i + 1) for i, m in enumerate(measured)],
    }


STAGE_TARGET = 0.9  # the stage keeps at least this share of DALI's own speed


def stage_vs_bare_section(
    console: Any,
    spec: PreprocessSpec,
    image_sets: dict[str, Sequence[bytes]],
    batches: Sequence[int],
    threads: int,
    rounds: int,
    min_time_s: float,
    device: Literal["cpu", "gpu"] = "cpu",
    hw_decoder_loads: Sequence[float] = (HW_DECODER_LOAD,),
) -> list[dict[str, Any]]:
    """`stage_vs_bare` per size (``image_sets``: label → images) × batch (× hardware decoder
    share on a GPU); prints the table and, for a ratio the rounds leave undecided against
    `STAGE_TARGET`, a line of its own. Returns the rows."""
    from cvserve.profiling.bench.rounds import Verdict
    from cvserve.profiling.tables import results_table

    rows = []
    loads = hw_decoder_loads if device == "gpu" else (HW_DECODER_LOAD,)
    for size, images in image_sets.items():
        for batch in batches:
            for load in loads:
                row = stage_vs_bare(spec, images, batch, threads, rounds, min_time_s, device, load)
                spread = Spread.from_dict(row["ratio"])
                what = f"{device} {size} batch {batch} stage / bare"
                verdict = Verdict(what, spread, STAGE_TARGET)
                rows.append({"size": size, **row, "verdict": verdict.to_dict()})
                if not verdict.decided:
                    console.print(verdict.line(), markup=False, soft_wrap=True)
    columns = {
        "size": lambda r: r["size"],
        "batch": lambda r: str(r["batch"]),
        **({"hw decoder": lambda r: f"{r['hw_decoder_load']:g}"} if device == "gpu" else {}),
        "stage img/s": lambda r: f"{r['stage_images_per_s']:.1f}",
        "bare img/s": lambda r: f"{r['bare_images_per_s']:.1f}",
        "stage / bare": lambda r: Spread.from_dict(r["ratio"]).cell(),
        f">= {STAGE_TARGET}": lambda r: r["verdict"]["outcome"],
    }
    title = (
        f"DALI {device}: cvserve's stage vs the same graph bare ({threads} threads; medians of "
        f"{rounds} alternating rounds [min-max])"
    )
    console.print(results_table(title, columns, rows))
    return rows
