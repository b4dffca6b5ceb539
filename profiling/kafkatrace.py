"""One request over Kafka as spans: its results' broker hops, with each stage's Triton trace
nested in the worker span of the call.

A request's results share their first hops (submit → the first stage) and part at a fan-out
(one message per crop). Every distinct pair of consecutive hops becomes one span (`hop_edges`;
kinds from `profiling.trace.HOP_SPAN_KIND`): the wait for a busy consumer, broker transit, the
wait for a free Triton call, the call, the wait for the worker's batch, making the outputs. Each
branch has a lane of its own (the first-stage result lane 0, crop ``k`` lane ``k + 1``), so a
trace viewer shows parallel crops side by side. A ``<stage>.dispatched`` → ``<stage>.answered``
span gets the Triton trace of that call, found by `broker.schema.Message.call_id` (request id,
``:<crop index>`` for a crop) and checked against the stage's ensemble.

Clocks: hops are wall-clock stamps of several processes; `WallClock` maps them onto this host's
monotonic clock (the client's and Triton's) and states the bound. Within one message, a hop is
never taken as earlier than the one before it (a worker that was ready before the message
existed), and the submit hop not before the client handed the record to its producer (it is
stamped as the message is made, inside the client's ``serialize`` span).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cvserve.broker.routes import Route
from cvserve.broker.schema import ANSWERED, DISPATCHED, Message, SchemaError, decode_outputs
from cvserve.pipelines.variants import PREPROCESS_TIMES, TIME_TENSORS, reported_stage_times
from cvserve.profiling.attribution import attribute
from cvserve.profiling.kafkaload import HANDED_OFF, BrokerRequest
from cvserve.profiling.sweep_results import RequestRecord
from cvserve.profiling.trace import WallClock, add_hop_span, hop_event
from cvserve.profiling.tritontrace import ModelTrace, attach_triton


@dataclass
class HopEdge:
    """Consecutive hops ``a`` → ``b`` (monotonic ns) shared by the messages whose call ids are
    ``call_ids``; ``b_ns`` is the latest of their ``b`` (a stage stamps each emitted message)."""

    a: str
    a_ns: int
    b: str
    b_ns: int
    lane: int
    call_ids: list[str] = field(default_factory=list)


def branch_order(results: Sequence[Message]) -> list[Message]:
    """The first-stage result first, then crops by index."""
    return sorted(results, key=lambda m: -1 if m.crop is None else m.crop.index)


def monotonic_hops(message: Message, clock: WallClock, first_ns: int = 0) -> list[tuple[str, int]]:
    """The hops of ``message`` on the monotonic clock, none earlier than the one before it nor
    than ``first_ns``."""
    hops, last = [], first_ns
    for hop in message.trace.hops:
        last = max(last, clock.to_monotonic(hop.t_ns))
        hops.append((hop.label, last))
    return hops


def hop_edges(results: Sequence[Message], clock: WallClock, first_ns: int = 0) -> list[HopEdge]:
    """The distinct hop pairs of one request's results, in first-seen order."""
    edges: dict[tuple[str, int, str], HopEdge] = {}
    for lane, message in enumerate(branch_order(results)):
        for (a, a_ns), (b, b_ns) in itertools.pairwise(monotonic_hops(message, clock, first_ns)):
            edge = edges.get((a, a_ns, b))
            if edge is None:
                edge = edges[(a, a_ns, b)] = HopEdge(a, a_ns, b, b_ns, lane)
            edge.b_ns = max(edge.b_ns, b_ns)
            edge.call_ids.append(message.call_id)
    return list(edges.values())


REPORTED = tuple(t.name for t in TIME_TENSORS)


def reported_times(results: Sequence[Message]) -> dict[str, dict[str, list[int]]]:
    """Call id → the times its stage reported for that call, by tensor (`TIME_TENSORS`: ns
    per part of a fused model or per stage apart; `PREPROCESS_TIMES`: ns per DALI step), from
    the results that carry them (a pipeline the profiler serves: `kafkasweep.as_profiled`)."""
    times: dict[str, dict[str, list[int]]] = {}
    for message in results:
        if not any(name.encode() in message.value for name in REPORTED):  # skip the JSON parse
            continue
        try:
            outputs = decode_outputs(message.value)
        except SchemaError:
            continue
        times[message.call_id] = {
            name: [int(ns) for ns in outputs[name].reshape(-1)]
            for name in REPORTED
            if name in outputs
        }
    return times


def join_request(
    request: BrokerRequest,
    route: Route,
    clock: WallClock,
    triton: Mapping[str, ModelTrace],
    roles: Mapping[str, str],
) -> RequestRecord:
    """Finish ``request``'s trace (hop spans, Triton spans, end = its last result read) and
    attribute it. ``triton``: Triton traces by request id; ``roles``: model → stage role."""
    trace = request.trace
    ensembles = {stage.name: stage.ensemble for stage in route.stages}
    reported = reported_times(request.results)
    calls = traced = skew = 0
    for edge in hop_edges(request.results, clock, trace.marks[HANDED_OFF]):
        span = add_hop_span(trace, (edge.a, edge.a_ns), (edge.b, edge.b_ns), lane=edge.lane)
        if hop_event(edge.a) != DISPATCHED:
            continue
        calls += 1
        ensemble = ensembles.get(span.stage or "")
        call = next((c for c in edge.call_ids if c in triton and triton[c].model == ensemble), None)
        found = None if call is None else triton[call]
        traced += found is not None
        # dispatched → answered is the call itself: send and receive around Triton's spans.
        exact = hop_event(edge.b) == ANSWERED
        window = (span.start_ns, span.end_ns)
        skew = max(
            skew,
            attach_triton(
                trace,
                found,
                roles,
                *window,
                span,
                transfers=exact,
                caller=span.process,
                preprocess_ns=reported.get(call or "", {}).get(PREPROCESS_TIMES.name),
                stage_ns=reported_stage_times(reported.get(call or "", {})),
            ),
        )
    first_ns = trace.marks[HANDED_OFF]
    trace.finish(max(monotonic_hops(m, clock, first_ns)[-1][1] for m in request.results))
    trace.attributes.update({"crops": request.crops, "triton_calls": calls})
    return RequestRecord(trace, attribute(trace), calls > 0 and traced == calls, skew)
