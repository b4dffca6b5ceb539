"""``--warmup-max-messages``: the warm-up bound of the broker hop benchmarks (`cvserve bench
kafka`, `cvserve bench redis`), which warm up until the hop is steady (`hop_records.warm_up`)."""

from __future__ import annotations

import argparse

from cvserve.profiling.bench.hop_records import WARMUP_MAX_MESSAGES


def add_warmup_bound(parser: argparse.ArgumentParser, minimum: str) -> None:
    """The option, its help naming ``minimum`` (the command's option for the least warm-up)."""
    parser.add_argument(
        "--warmup-max-messages",
        type=int,
        default=WARMUP_MAX_MESSAGES,
        help=f"the warm-up's bound when the hop never settles (= {minimum}: a fixed count)",
    )
