"""`cvserve tune`: the serving settings of a whole pipeline, chosen by short measured runs.

Coordinate descent over `AXES` in order — engine, the stages fused into one model or not
(`models.fusion`), the DALI/engine thread split, max batch, queue delay, preferred batch sizes,
instances —: each round serves every untried value of one axis
(the others at the best so far) as variants of the ensemble in one Triton, measures each with
the same images, and keeps the best for the goal:

- ``throughput``: most images/s with ``concurrency`` requests in flight, p99 within ``p99_ms``
  when given;
- ``latency``: lowest p50 at a fixed ``rate`` (open loop), the rate achieved (within 5 %).

A value replaces the best only when it is more than `MARGIN` better (this machine's noise between
two runs). Every trial is in the returned rows, the report and the printed table.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from cvserve.deploy.host import usable_cores
from cvserve.models.engine_choice import stage_choice
from cvserve.models.fusion import fusable, fused_settings
from cvserve.models.params import DnnParams
from cvserve.models.serving import serve_locally
from cvserve.pipelines.spec import PipelineSpec
from cvserve.pipelines.variants import is_fused, unfused
from cvserve.preprocess.spec import PreprocessParams
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling.load import LoadResult, closed_loop, image_senders, open_loop, warm_up
from cvserve.profiling.machine import machine_info, write_report

MARGIN = 0.03
Settings = dict[str, Any]
Build = Callable[..., PipelineSpec]  # build(name=..., **settings) -> the ensemble's spec


@dataclass(frozen=True)
class Goal:
    """What tuning maximises: ``throughput`` (p99 bound ``p99_ms`` optional, ``concurrency`` in
    flight) or ``latency`` (p50 at ``rate`` images/s)."""

    kind: str = "throughput"
    concurrency: int = 8
    p99_ms: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("throughput", "latency"):
            raise ValueError(f"goal {self.kind!r}: throughput or latency")
        if self.kind == "latency" and not self.rate:
            raise ValueError("the latency goal needs a rate (images/s)")

    def describe(self) -> str:
        if self.kind == "latency":
            return f"lowest p50 at {self.rate:g} img/s"
        bound = f", p99 <= {self.p99_ms:g} ms" if self.p99_ms else ""
        return f"most img/s at {self.concurrency} in flight{bound}"


@dataclass(frozen=True)
class Space:
    """The values each axis may take (None: derived from the pipeline and this machine)."""

    engines: tuple[str, ...] | None = None
    thread_splits: tuple[tuple[int, int], ...] | None = None  # (dali, engine) threads
    max_batch_sizes: tuple[int, ...] = (1, 4, 8, 16)
    queue_delays_us: tuple[int, ...] = (0, 1000, 4000)
    instances: tuple[int, ...] = (1, 2)
    fuse: tuple[bool, ...] = (False, True)  # True: fused, from `models.fusion.fused_settings`


@dataclass
class Trial:
    settings: Settings
    axis: str
    images_per_s: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    feasible: bool = False
    score: float = float("-inf")
    note: str = ""
    chosen: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def settings_of(spec: PipelineSpec) -> Settings:
    """The `pipelines.tuned.SETTINGS` a built spec serves with."""
    fused, spec = is_fused(spec), unfused(spec)
    dnn, pre = spec.stage_by_role("inference"), spec.stage_by_role("preprocess")
    params = dnn.params_as(DnnParams)
    return {
        "engine": params.engine,
        "precision": params.precision,
        "max_batch_size": dnn.batching.max_batch_size,
        "max_queue_delay_us": dnn.batching.max_queue_delay_us,
        "preferred_batch_sizes": dnn.batching.preferred_batch_sizes,
        "instances": dnn.instances,
        "dali_threads": pre.params_as(PreprocessParams).num_threads,
        "torch_threads": params.torch_threads,
        "fuse_stages": fused,
    }


def engine_values(spec: PipelineSpec) -> tuple[str, ...]:
    """Engines worth serving: within bound in this machine's measurement, fastest first (at most
    three: the slower ones lose served too)."""
    choice = stage_choice(unfused(spec).stage_by_role("inference"))
    ranked = sorted(
        (m for m in choice.measured if m.within_bound and m.precision == "fp32"),
        key=lambda m: -m.images_per_s,
    )
    return tuple(m.engine for m in ranked[:3])


def thread_splits(cores: int) -> tuple[tuple[int, int], ...]:
    """(DALI, engine) threads: every core to each stage, the cores shared between them, or one
    stage on one thread and the other on every core. With a light DNN the last helps most
    (classify mobilenet_v3_small on 2 cores, alternating: DALI 2 + onnxruntime 1 served 297-300
    img/s against 272-293 for 1 + 1 and 257-262 for 2 + 2)."""
    half = max(1, cores // 2)
    shared = (half, max(1, cores - half))
    return tuple(dict.fromkeys([(cores, cores), shared, (1, cores), (cores, 1)]))


def axis_candidates(axis: str, best: Settings, space: Space, spec: PipelineSpec) -> list[Settings]:
    """The settings to try for ``axis``: ``best`` with that axis's values from ``space``."""
    if axis == "engine":
        values = space.engines or engine_values(spec)
        return [{**best, "engine": e, "precision": "fp32"} for e in values]
    if axis == "fuse_stages":
        if fusable(unfused(spec)):
            return []  # why is in `models.fusion.fusable`; nothing to try
        # Fused, an instance per core (a light DNN, or one whose engine does not scale across
        # cores: resnet50 bf16 served 141 img/s fused 1 + 1 x 2, 123 fused 2 + 2 x 1, 107
        # apart), and fused as the best is threaded (a heavy DNN's engine wants every core).
        # On a GPU the instances share the device, not cores: fused as the best is served only.
        fused = [{**best, "fuse_stages": True}]
        if spec.stage_by_role("inference").device == "cpu":
            fused.insert(0, {**best, **fused_settings(usable_cores())})
        values = [c for f in space.fuse for c in (fused if f else [{**best, "fuse_stages": False}])]
        return [c for i, c in enumerate(values) if c not in values[:i]]
    if axis == "threads":
        splits = space.thread_splits or thread_splits(usable_cores())
        return [{**best, "dali_threads": d, "torch_threads": t} for d, t in splits]
    if axis == "max_batch_size":
        return [
            {**best, "max_batch_size": b, "preferred_batch_sizes": ()}
            for b in space.max_batch_sizes
        ]
    if axis == "max_queue_delay_us":
        return [{**best, "max_queue_delay_us": d} for d in space.queue_delays_us]
    if axis == "preferred_batch_sizes":
        if not best["max_queue_delay_us"] or best["max_batch_size"] == 1:
            return []  # no delay: nothing waits for a preferred size
        return [{**best, "preferred_batch_sizes": p} for p in ((), (best["max_batch_size"],))]
    if axis == "instances":
        return [{**best, "instances": n} for n in space.instances]
    raise ValueError(axis)


AXES: tuple[str, ...] = (
    "engine",
    "fuse_stages",
    "threads",
    "max_batch_size",
    "max_queue_delay_us",
    "preferred_batch_sizes",
    "instances",
)


def _key(settings: Settings) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()))


def _measure(
    url: str, spec: PipelineSpec, images: list[bytes], goal: Goal, duration_s: float
) -> LoadResult:
    make_sender = image_senders(url, spec, images)
    warm_up(make_sender, 2 * spec.stage_by_role("inference").batching.max_batch_size)
    if goal.kind == "latency":
        return open_loop(make_sender, float(goal.rate or 1.0), duration_s)
    return closed_loop(make_sender, goal.concurrency, duration_s=duration_s)


@dataclass(frozen=True)
class Verdict:
    """How one measured run scores for a `Goal` (higher ``score`` is better)."""

    feasible: bool
    score: float
    note: str = ""


def verdict(
    goal: Goal, images_per_s: float, p50_ms: float, p99_ms: float, achieved_rate: float
) -> Verdict:
    """``throughput``: images/s, feasible within the p99 bound; ``latency``: minus p50, feasible
    when ``achieved_rate`` (completed/s over the sending time) holds 95 % of the goal's rate."""
    if goal.kind == "latency":
        held = achieved_rate >= 0.95 * float(goal.rate or 0)
        return Verdict(held, -p50_ms, "" if held else f"rate not held ({achieved_rate:.1f} img/s)")
    within = goal.p99_ms is None or p99_ms <= goal.p99_ms
    return Verdict(within, images_per_s, "" if within else f"p99 over {goal.p99_ms:g} ms")


def _judge(trial: Trial, result: LoadResult, goal: Goal, duration_s: float) -> None:
    trial.images_per_s = result.throughput
    trial.p50_ms, trial.p99_ms = result.percentile_ms(50), result.percentile_ms(99)
    trial.errors = result.errors
    if result.errors or not result.requests:
        trial.note = f"{result.errors} errors"
        return
    judged = verdict(
        goal, trial.images_per_s, trial.p50_ms, trial.p99_ms, result.requests / duration_s
    )
    trial.feasible, trial.score, trial.note = judged.feasible, judged.score, judged.note


class Scored(Protocol):
    feasible: bool
    score: float


def better(new: Scored, best: Scored | None) -> bool:
    """Whether ``new`` replaces ``best``: feasible, and more than `MARGIN` better."""
    if not new.feasible:
        return False
    if best is None or not best.feasible:
        return True
    gain = new.score - best.score
    return gain > MARGIN * abs(best.score)


def tune(
    build: Build,
    goal: Goal | None = None,
    space: Space | None = None,
    size: tuple[int, int] = (640, 480),
    duration_s: float = 5.0,
    console: Console | None = None,
) -> tuple[Settings, list[Trial]]:
    """The best settings found for the pipeline ``build`` makes, and every trial."""
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    goal, space = goal or Goal(), space or Space()
    base = build(name="tune_base")
    best_settings = settings_of(base)
    if best_settings["engine"] is None:  # serve the measured choice explicitly
        best_settings["engine"] = engine_values(base)[0]
    images = [synthetic_image(size[0], size[1], seed) for seed in range(16)]
    trials: list[Trial] = []
    tried: dict[tuple, Trial] = {}
    best: Trial | None = None
    for axis in ("baseline", *AXES):
        if axis == "baseline":
            candidates = [best_settings]
        else:
            candidates = axis_candidates(axis, best_settings, space, base)
        fresh = [c for c in candidates if _key(c) not in tried]
        if not fresh:
            continue
        specs = [build(name=f"tune{len(trials) + i}", **c) for i, c in enumerate(fresh)]
        console.print(f"  {axis}: serving {len(specs)} variant(s)")
        with serve_locally(specs) as server:
            for settings, spec in zip(fresh, specs, strict=True):
                trial = Trial(settings, axis)
                _judge(trial, _measure(server.grpc_url, spec, images, goal, duration_s), goal,
                       duration_s)  # fmt: skip
                tried[_key(settings)] = trial
                trials.append(trial)
                console.print(
                    f"    {_describe(settings)}: {trial.images_per_s:.1f} img/s, "
                    f"p50 {trial.p50_ms:.1f} ms, p99 {trial.p99_ms:.1f} ms {trial.note}"
                )
                if better(trial, best):
                    best, best_settings = trial, settings
    if best is None:
        raise RuntimeError(f"no setting met the goal ({goal.describe()}); see the table")
    best.chosen = True
    return best_settings, trials


def _engine(s: Settings) -> str:
    """The engine, and its precision where it is reduced (``openvino bf16``)."""
    precision = s.get("precision")
    return f"{s['engine']} {precision}" if precision and precision != "fp32" else str(s["engine"])


def _describe(s: Settings) -> str:
    preferred = ",".join(str(b) for b in s["preferred_batch_sizes"]) or "-"
    return (
        f"{_engine(s)}{' fused' if s.get('fuse_stages') else ''} "
        f"threads {s['dali_threads']}+{s['torch_threads']} batch "
        f"{s['max_batch_size']} delay {s['max_queue_delay_us']}us preferred {preferred} "
        f"x{s['instances']}"
    )


def report_tuning(
    pipeline: str,
    goal: Goal,
    settings: Settings,
    trials: Sequence[Trial],
    size: tuple[int, int],
    duration_s: float,
    written_to: str,
    out: Path | None = None,
    console: Console | None = None,
) -> Path:
    """Print the table of trials and write the JSON report; its path."""
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title=f"cvserve tune {pipeline}: {goal.describe()}, {size[0]}x{size[1]}")
    for column in ("axis", "engine", "fused", "threads", "batch", "delay us", "preferred", "inst"):
        table.add_column(column, justify="right")
    for column in ("img/s", "p50 ms", "p99 ms", "", "note"):
        table.add_column(column, justify="right")
    for t in trials:
        s = t.settings
        table.add_row(
            t.axis,
            _engine(s),
            "yes" if s.get("fuse_stages") else "no",
            f"{s['dali_threads']}+{s['torch_threads']}",
            str(s["max_batch_size"]),
            str(s["max_queue_delay_us"]),
            ",".join(str(b) for b in s["preferred_batch_sizes"]) or "-",
            str(s["instances"]),
            f"{t.images_per_s:.1f}",
            f"{t.p50_ms:.1f}",
            f"{t.p99_ms:.1f}",
            "chosen" if t.chosen else "",
            t.note,
        )
    console.print(table)
    console.print(f"chosen: {_describe(settings)} -> {written_to}")
    report = {
        "benchmark": "tune",
        "pipeline": pipeline,
        "goal": dataclasses.asdict(goal),
        "size": f"{size[0]}x{size[1]}",
        "duration_s": duration_s,
        "chosen": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "written_to": written_to,
        "machine": machine_info(),
        "trials": [
            {
                **{k: v for k, v in dataclasses.asdict(t).items() if k != "extra"},
                "score": t.score if t.feasible else None,
            }
            for t in trials
        ],
    }
    path = write_report(report, f"tune-{pipeline}", out, console=console)
    return path
