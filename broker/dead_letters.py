"""Dead letters: a refused record as it was received, with why, by which stage, from where.

A dead letter keeps the record's key, value and headers and adds ``error``, ``error-stage`` and
``source`` (``topic/partition@offset``). One that would not fit a record is trimmed — the value
first, then the largest headers, then the key — each dropped part's size and SHA-256 kept in the
``dead-letter-trimmed`` header (JSON), so nothing is dropped without a trace.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cvserve.broker.schema import Header, Record
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits


def dead_letter_record(
    received: Record, reason: str, stage: str, source: str, limits: MessageLimits = LIMITS
) -> Record:
    """``received`` as it was, with the reason it was refused, by which stage, from where. If
    that would not fit a record, parts are dropped until it does — the value, then the largest
    headers, then the key — each named with its size and SHA-256 in ``dead-letter-trimmed``."""
    extra = [
        (str(Header.ERROR), reason.encode("utf-8", "replace")),
        (str(Header.ERROR_STAGE), stage.encode()),
        (str(Header.SOURCE), source.encode()),
    ]
    key, value, headers = received.key, received.value, list(received.headers)
    trimmed: dict[str, Any] = {}

    def letter() -> Record:
        notes = [(str(Header.TRIMMED), json.dumps(trimmed).encode())] if trimmed else []
        return Record(key, value, [*headers, *extra, *notes])

    while not limits.fits(letter().size):
        if value:
            trimmed["value"], value = _digest(value), None
        elif headers:
            largest = max(range(len(headers)), key=lambda i: len(headers[i][1] or b""))
            name, raw = headers.pop(largest)
            trimmed.setdefault("headers", []).append({"name": name, **_digest(raw or b"")})
        elif key:
            trimmed["key"], key = _digest(key), None
        else:  # only the reason is left: shorten it
            extra[0] = (extra[0][0], extra[0][1][: len(extra[0][1]) // 2])
    return letter()


def _digest(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
