"""Per-request spans from Triton's trace API (``--trace-config``, trace level TIMESTAMPS).

What Triton 2.51 (the pytriton binary) does, as seen on this project's machines:

- the trace file can only be given on the command line (``--trace-config triton,file=PATH``;
  the trace API answers 501 to a new ``trace_file``); level, rate and log frequency can be
  changed at run time through the gRPC/HTTP trace API;
- every traced request gets one entry per model it ran: the ensemble, and each composing model
  with ``parent_id`` = the ensemble's trace id; all carry the client's ``request_id``;
- traces are kept in memory and written to ``PATH.<n>`` (a new ``n`` each time) when the trace
  settings change, e.g. on turning tracing off: `TritonTracer.disable` flushes;
- timestamps are ``steady_clock`` ns: CLOCK_MONOTONIC, the clock of `time.monotonic_ns`.

Per model: queue = QUEUE_START → COMPUTE_START, compute_input = COMPUTE_START →
COMPUTE_INPUT_END, compute_infer = COMPUTE_INPUT_END → COMPUTE_OUTPUT_START, compute_output =
COMPUTE_OUTPUT_START → COMPUTE_END: the same intervals the statistics API sums.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvserve.pipelines.variants import FUSED_PARTS, TIMED, time_slot
from cvserve.preprocess.preprocessor import STEPS
from cvserve.profiling.categories import FUSED, HANDOFF
from cvserve.profiling.trace import COMPUTE_INFER, Span, Trace
from cvserve.profiling.tritonstats import PHASES

# (phase, start timestamp, end timestamp), in the statistics API's phase names.
PHASE_BOUNDS: tuple[tuple[str, str, str], ...] = (
    ("queue", "QUEUE_START", "COMPUTE_START"),
    ("compute_input", "COMPUTE_START", "COMPUTE_INPUT_END"),
    ("compute_infer", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"),
    ("compute_output", "COMPUTE_OUTPUT_START", "COMPUTE_END"),
)
assert tuple(p for p, _, _ in PHASE_BOUNDS) == PHASES
# Traces are flushed when settings change, so this is never reached within a run.
_LOG_FREQUENCY = "1000000000"
# Preprocessing sub-steps a preprocess model may report, in order (see `split_compute`).
PREPROCESS_STEPS: tuple[str, ...] = STEPS  # what the preprocess model times, in order


class TraceUnavailable(RuntimeError):
    """The server cannot give per-request traces (the message says what to change)."""


def server_args(trace_file: Path) -> tuple[str, ...]:
    """``tritonserver`` arguments that let `TritonTracer` trace: a file, tracing off at start."""
    return (
        f"--trace-config=triton,file={Path(trace_file).resolve()}",
        "--trace-config=level=OFF",
        "--trace-config=rate=1",
    )


@dataclass
class ModelTrace:
    """Triton's trace of one model for one request; ``children``: composing models' traces."""

    trace_id: int
    model: str
    request_id: str
    parent_id: int | None
    timestamps: dict[str, int] = field(default_factory=dict)
    children: list[ModelTrace] = field(default_factory=list)

    def walk(self) -> Iterator[ModelTrace]:
        yield self
        for child in self.children:
            yield from child.walk()

    def phase_ns(self) -> dict[str, int]:
        """This model's own phases (empty for an ensemble, which has no compute)."""
        ts = self.timestamps
        return {p: ts[b] - ts[a] for p, a, b in PHASE_BOUNDS if a in ts and b in ts}


def parse_trace_entries(entries: Iterable[Mapping[str, Any]]) -> dict[int, ModelTrace]:
    """Trace-file entries (``{"id", "model_name", ...}`` and ``{"id", "timestamps"}``) merged by
    id, children linked to parents."""
    traces: dict[int, ModelTrace] = {}
    stamps: dict[int, dict[str, int]] = {}
    for entry in entries:
        tid = int(entry["id"])
        if "model_name" in entry:
            traces[tid] = ModelTrace(
                tid,
                str(entry["model_name"]),
                str(entry.get("request_id", "")),
                int(entry["parent_id"]) if "parent_id" in entry else None,
            )
        for stamp in entry.get("timestamps", ()):
            stamps.setdefault(tid, {})[str(stamp["name"])] = int(stamp["ns"])
    for tid, values in stamps.items():
        if tid in traces:
            traces[tid].timestamps.update(values)
    for trace in traces.values():
        if trace.parent_id is not None and trace.parent_id in traces:
            traces[trace.parent_id].children.append(trace)
    for trace in traces.values():
        trace.children.sort(key=lambda t: t.timestamps.get("REQUEST_START", 0))
    return traces


def requests_by_id(traces: Mapping[int, ModelTrace]) -> dict[str, ModelTrace]:
    """Top-level traces (no parent) keyed by request id."""
    return {t.request_id: t for t in traces.values() if t.parent_id is None and t.request_id}


def phase_totals(requests: Iterable[ModelTrace]) -> dict[str, dict[str, int]]:
    """Per model: each phase's ns summed over ``requests``, and ``requests`` (how many ran it):
    comparable with statistics-API deltas."""
    totals: dict[str, dict[str, int]] = {}
    for request in requests:
        for node in request.walk():
            phases = node.phase_ns()
            if not phases:
                continue
            model = totals.setdefault(node.model, {**dict.fromkeys(PHASES, 0), "requests": 0})
            model["requests"] += 1
            for phase, ns in phases.items():
                model[phase] += ns
    return totals


@dataclass
class TritonTracer:
    """Switches a server's tracing on and off through its trace API and reads what it wrote.

    ``client`` is a tritonclient gRPC client; ``trace_file`` the server's ``--trace-config
    triton,file`` (it must be readable from here: same host or shared folder).
    """

    client: Any
    trace_file: Path
    _read: set[str] = field(default_factory=set)
    _pending: dict[int, ModelTrace] = field(default_factory=dict)
    _entries: list[Mapping[str, Any]] = field(default_factory=list)

    @classmethod
    def attach(cls, client: Any) -> TritonTracer:
        """A tracer for the server ``client`` talks to; `TraceUnavailable` if it has no file."""
        settings = client.get_trace_settings(as_json=True).get("settings", {})
        values = settings.get("trace_file", {}).get("value", [""])
        path = values[0] if values else ""
        if settings.get("trace_mode", {}).get("value", ["triton"])[0] != "triton" or not path:
            raise TraceUnavailable(
                "the server has no trace file: start tritonserver with "
                "--trace-config triton,file=PATH --trace-config level=OFF (PATH readable from "
                "this machine); cvserve profile starts its own Triton that way"
            )
        tracer = cls(client, Path(path))
        tracer._read.update(p.name for p in tracer._files())  # earlier runs' files
        return tracer

    def _files(self) -> list[Path]:
        parent, stem = self.trace_file.parent, self.trace_file.name
        if not parent.is_dir():
            return []
        return sorted(
            p
            for p in parent.iterdir()
            if p.name.startswith(stem + ".") and p.name[len(stem) + 1 :].isdigit()
        )

    def enable(self) -> None:
        """Trace every request from now on (timestamps level, rate 1)."""
        self.client.update_trace_settings(
            settings={
                "trace_level": ["TIMESTAMPS"],
                "trace_rate": "1",
                "trace_count": "-1",
                "log_frequency": _LOG_FREQUENCY,
            }
        )

    def disable(self) -> None:
        """Stop tracing; Triton writes the traces it holds to a new ``<file>.<n>``."""
        self.client.update_trace_settings(settings={"trace_level": ["OFF"]})

    @contextlib.contextmanager
    def tracing(self) -> Iterator[None]:
        self.enable()
        try:
            yield
        finally:
            self.disable()

    def _read_new_files(self) -> None:
        for path in self._files():
            if path.name in self._read:
                continue
            try:
                entries = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                continue  # still being written: read it on the next poll
            self._read.add(path.name)
            self._entries.extend(entries)

    def collect(self, request_ids: Sequence[str], timeout_s: float = 30.0) -> dict[str, ModelTrace]:
        """The traces of ``request_ids`` written so far, waiting up to ``timeout_s`` for missing
        ones (Triton writes a trace once its request is released). Missing ids are absent."""
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout_s
        found: dict[str, ModelTrace] = {}
        while True:
            self._read_new_files()
            found = {
                rid: t
                for rid, t in requests_by_id(parse_trace_entries(self._entries)).items()
                if rid in wanted
            }
            if len(found) == len(wanted) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)  # poll interval; the deadline above bounds the wait
        done = {node.trace_id for t in found.values() for node in t.walk()}
        self._entries = [e for e in self._entries if int(e["id"]) not in done]
        return found


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


def attach_triton(
    trace: Trace,
    request: ModelTrace | None,
    roles: Mapping[str, str],
    call_start_ns: int,
    call_end_ns: int,
    parent: Span | None = None,
    preprocess_ns: Sequence[int] | None = None,
    transfers: bool = True,
    caller: str = "client",
    stage_ns: Sequence[int] | None = None,
) -> int:
    """Add the spans of a Triton call made in ``[call_start_ns, call_end_ns]`` by process
    ``caller`` (the client, or a stage worker).

    With its trace: send (call start → server starts the request), the server's model spans
    with their phases (``roles``: model name → stage role), receive (response complete → the
    call returns). ``transfers=False`` leaves out send and receive (when the window is wider
    than the call, e.g. a stage worker's consumed → produced hops). Without a trace: a single
    untraced ``overhead`` span. ``preprocess_ns`` (PREPROCESS_TIMES) and ``stage_ns`` (ns per
    place of `TIMED`: a fused model's STAGE_TIMES, or the stages' own times added up)
    split the compute of the models that reported them (`split_compute`).
    Returns how far Triton's timestamps fell outside the window
    (ns, 0 when the clocks agree): the measured skew.
    """
    if request is None:
        if transfers:
            trace.add(
                "overhead",
                call_start_ns,
                call_end_ns,
                name="triton (untraced)",
                parent=parent,
                process=caller,
            )
        return 0
    ts = request.timestamps
    server_start = ts.get("REQUEST_START", call_start_ns)
    response = ts.get("INFER_RESPONSE_COMPLETE", ts.get("REQUEST_END", call_end_ns))
    skew = max(0, call_start_ns - server_start, response - call_end_ns)
    start = _clamp(server_start, call_start_ns, call_end_ns)
    # A composing model may finish its bookkeeping just after the response left.
    last = max([response, *(c.timestamps.get("REQUEST_END", 0) for c in request.children)])
    end = _clamp(last, start, call_end_ns)
    if transfers:
        trace.add("send", call_start_ns, start, parent=parent, process=caller)
    server = trace.add(
        "overhead",
        start,
        end,
        name=f"triton:{request.model}",
        parent=parent,
        process="triton",
        stage=request.model,
    )
    # An ensemble's composing models; a model called by itself is its own only one.
    for child in request.children or [request]:
        _model_spans(trace, child, server, roles, preprocess_ns, stage_ns)
    if transfers:
        trace.add("receive", end, call_end_ns, parent=parent, process=caller)
    return skew


def _model_spans(
    trace: Trace,
    node: ModelTrace,
    parent: Span,
    roles: Mapping[str, str],
    preprocess_ns: Sequence[int] | None,
    stage_ns: Sequence[int] | None = None,
) -> None:
    ts = node.timestamps
    start = _clamp(ts.get("REQUEST_START", parent.start_ns), parent.start_ns, parent.end_ns)
    end = _clamp(ts.get("REQUEST_END", parent.end_ns), start, parent.end_ns)
    span = trace.add(
        "overhead", start, end, name=node.model, parent=parent, process="triton", stage=node.model
    )
    role = roles.get(node.model)
    for phase, a, b in PHASE_BOUNDS:
        if a in ts and b in ts:
            p_start = _clamp(ts[a], start, end)
            phase_span = trace.add(
                phase,
                p_start,
                _clamp(ts[b], p_start, end),
                name=f"{node.model}.{phase}",
                parent=span,
                process="triton",
                stage=node.model,
                role=role,
            )
            if phase == COMPUTE_INFER:
                split_compute(trace, phase_span, role, preprocess_ns, stage_ns)
    for child in node.children:
        _model_spans(trace, child, span, roles, preprocess_ns, stage_ns)


def _back_to_back(
    trace: Trace, compute: Span, kinds: Sequence[str], durations: Sequence[int]
) -> list[Span]:
    """Spans of ``kinds`` lasting ``durations`` (ns) nested under ``compute``, back to back from
    its start, scaled down together if they exceed it."""
    total = sum(max(0, int(ns)) for ns in durations)
    if total <= 0:
        return []
    scale = min(1.0, compute.duration_ns / total)
    spans, t = [], compute.start_ns
    for kind, ns in zip(kinds, durations, strict=False):
        length = int(max(0, int(ns)) * scale)
        spans.append(
            trace.add(
                kind,
                t,
                t + length,
                name=f"{compute.stage}.{kind}",
                parent=compute,
                process="triton",
                stage=compute.stage,
            )
        )
        t += length
    return spans


def split_compute(
    trace: Trace,
    compute: Span,
    role: str | None,
    step_ns: Sequence[int] | None,
    part_ns: Sequence[int] | None,
) -> None:
    """Split a model's compute by what it reported. ``part_ns`` (ns per place of `TIMED`): a
    fused model's parts (``role`` `FUSED`), or this stage's copies and own work (its role's
    places), nested back to back from the compute's start in `TIMED` order (parts of 0 ns left
    out), and what they leave of it as `HANDOFF` (Triton ↔ the stub: data movement);
    ``step_ns`` (PREPROCESS_TIMES) splits the preprocessing in turn. Without ``part_ns`` (or
    when this stage's work in it is 0) the compute keeps its role's category, ``step_ns``
    nested in a preprocess model's."""
    if role == FUSED and part_ns:
        places = [i for i, ns in enumerate(part_ns) if ns > 0]
    elif role in FUSED_PARTS and part_ns and part_ns[time_slot(role, role)] > 0:  # type: ignore[arg-type]
        places = [i for i, (r, _) in enumerate(TIMED) if r == role and part_ns[i] > 0]
    else:
        if role == "preprocess" and step_ns:
            _back_to_back(trace, compute, PREPROCESS_STEPS, step_ns)
        return
    kinds = [TIMED[i][1] for i in places]
    parts = _back_to_back(trace, compute, kinds, [part_ns[i] for i in places])
    if parts and parts[-1].end_ns < compute.end_ns:
        trace.add(
            HANDOFF,
            parts[-1].end_ns,
            compute.end_ns,
            name=f"{compute.stage}.{HANDOFF}",
            parent=compute,
            process="triton",
            stage=compute.stage,
        )
    for kind, part in zip(kinds, parts, strict=False):
        if kind == "preprocess" and step_ns:
            _back_to_back(trace, part, PREPROCESS_STEPS, step_ns)
