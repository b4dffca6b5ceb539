"""The trace context a cvserve message carries: a W3C ``traceparent`` and bounded hops.

A hop is ``[label, unix_ns]``; the ``hops`` header is their JSON list, written compactly
(`encode_hops`) and read one hop at a time (`parse_hops`), so a header of any size from another
producer costs memory for the kept hops only. At most ``MessageLimits.max_hops`` hops in
``max_hops_bytes`` travel on; older ones are dropped and counted (`TraceContext.dropped`, the
``hops-dropped`` header).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cvserve.deploy.kafka_limits import LIMITS, MessageLimits

# Hop events (the part of a hop label after the component), in the order a stage stamps them.
READY, CONSUMED, DISPATCHED, ANSWERED, EMITTING, PRODUCED = (
    "ready",
    "consumed",
    "dispatched",
    "answered",
    "emitting",
    "produced",
)
MAX_LABEL_CHARS = 256
# One hop of the hops header, then "," or the closing "]" (JSON string rules for the label).
_HOP = re.compile(
    rb'\s*\[\s*"((?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*)"\s*,\s*([0-9]{1,19})'
    rb"\s*\]\s*(,|\]\s*\Z)"
)
_OPENING = re.compile(rb"\s*\[")
_INT64_MAX = (1 << 63) - 1
# Headers up to this many times ``max_hops_bytes`` are parsed whole (faster); larger, streamed.
_WHOLE_PARSE_FACTOR = 4


def hop_label(component: str, event: str) -> str:
    """``hop_label("detect", DISPATCHED)`` → ``"detect.dispatched"``."""
    return f"{component}.{event}"


@dataclass(frozen=True)
class Hop:
    """One component touching a message: ``label`` (e.g. ``classify.consumed``) at ``t_ns``."""

    label: str
    t_ns: int


@dataclass(frozen=True)
class TraceContext:
    """A W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), the hops so far and how many
    older hops were dropped to keep the trace within its bounds."""

    traceparent: str
    hops: tuple[Hop, ...] = ()
    dropped: int = 0

    @classmethod
    def new(cls) -> TraceContext:
        return cls(f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")

    @property
    def trace_id(self) -> str:
        return self.traceparent.split("-")[1]

    def child(self) -> TraceContext:
        """The same trace and hops under a new span id (a new message derived from this one)."""
        return replace(self, traceparent=f"00-{self.trace_id}-{secrets.token_hex(8)}-01")

    def hop(self, label: str, t_ns: int | None = None) -> TraceContext:
        return replace(
            self, hops=(*self.hops, Hop(label, time.time_ns() if t_ns is None else t_ns))
        )

    def hop_not_before(self, label: str, t_ns: int) -> TraceContext:
        """`hop` at ``t_ns``, or at the last hop's time if that is later (a worker ready before
        the message was produced: what it waited for starts when the message existed)."""
        return self.hop(label, max([t_ns, *(h.t_ns for h in self.hops[-1:])]))

    def restamp(self, label: str) -> TraceContext:
        """`hop`, replacing the last hop if it has the same label (a retried step is stamped
        at its last try)."""
        hops = self.hops[:-1] if self.hops and self.hops[-1].label == label else self.hops
        return replace(self, hops=hops).hop(label)

    def bounded(self, limits: MessageLimits = LIMITS) -> TraceContext:
        """The newest hops that fit ``limits`` (count and header bytes), the rest counted as
        dropped."""
        kept = newest_within(self.hops, limits)
        if len(kept) == len(self.hops):
            return self
        return replace(self, hops=kept, dropped=self.dropped + len(self.hops) - len(kept))


def newest_within(hops: Sequence[Hop], limits: MessageLimits) -> tuple[Hop, ...]:
    """The newest of ``hops`` that fit ``limits``: at most ``max_hops``, encoded in at most
    ``max_hops_bytes``."""
    newest = tuple(hops[-limits.max_hops :])
    if len(encode_hops(newest)) <= limits.max_hops_bytes:  # the usual case: all of them
        return newest
    kept: list[Hop] = []
    size = 1  # the list's brackets, less the comma the first hop does not need
    for hop in reversed(newest):
        size += len(json.dumps(hop.label)) + len(str(hop.t_ns)) + 4  # [ , ] and a comma
        if size > limits.max_hops_bytes:
            break
        kept.append(hop)
    return tuple(reversed(kept))


def encode_hops(hops: Sequence[Hop]) -> str:
    return json.dumps([[h.label, h.t_ns] for h in hops], separators=(",", ":"))


def parse_hops(raw: bytes, limits: MessageLimits) -> tuple[tuple[Hop, ...], int]:
    """(the newest hops of a ``hops`` header within ``limits``, how many older ones it held
    beyond them); `ValueError` saying what is wrong. A header a few times the kept size is
    parsed whole; a larger one is read as bytes one hop at a time, so a header of any size
    costs memory for the kept hops only."""
    if len(raw) <= _WHOLE_PARSE_FACTOR * limits.max_hops_bytes:
        pairs = _parse_whole(raw)
    else:
        pairs = _parse_streaming(raw, limits.max_hops)
    count, newest = pairs
    hops = []
    for label, t_ns in newest:
        if t_ns > _INT64_MAX:
            raise ValueError(f"hop time {t_ns} exceeds int64")
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"a hop label of {len(label):,} characters, at most {MAX_LABEL_CHARS}")
        hops.append(Hop(label, t_ns))
    kept = newest_within(hops, limits)
    return kept, count - len(kept)


def _not_hops(where: str) -> ValueError:
    return ValueError(
        f'not a JSON list of ["label", t_ns] pairs (t_ns a non-negative integer), {where}'
    )


def _parse_whole(raw: bytes) -> tuple[int, list[tuple[str, int]]]:
    """(count, every hop) of a small header, with one `json.loads`."""
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _not_hops(f"({exc})") from exc
    if not isinstance(parsed, list):
        raise _not_hops(f"but a JSON {type(parsed).__name__}")
    for n, pair in enumerate(parsed):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and type(pair[1]) is int
            and pair[1] >= 0
        ):
            raise _not_hops(f"at hop {n}: {json.dumps(pair)[:60]}")
    return len(parsed), [(label, t_ns) for label, t_ns in parsed]


def _parse_streaming(raw: bytes, newest: int) -> tuple[int, list[tuple[str, int]]]:
    """(count, the newest ``newest`` hops) of a header of any size, one regex match a hop."""
    kept: deque[tuple[bytes, bytes]] = deque(maxlen=newest)
    opening = _OPENING.match(raw)
    position, count, closed = (0, 0, False) if opening is None else (opening.end(), 0, False)
    while opening is not None and not closed:
        match = _HOP.match(raw, position)
        if match is None:
            break
        kept.append((match[1], match[2]))
        count += 1
        position, closed = match.end(), match[3] != b","
    if not closed:
        raise _not_hops(f"at byte {position}: {raw[position : position + 40]!r}")
    try:
        return count, [(json.loads(b'"' + label + b'"'), int(t_ns)) for label, t_ns in kept]
    except ValueError as exc:
        raise ValueError("a hop label is not UTF-8 text") from exc
