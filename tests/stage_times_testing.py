"""A `STAGE_TIMES` row built by what each place holds, for tests that report times."""

from __future__ import annotations

from cvserve.pipelines.variants import TIMED, TO_DEVICE, TO_HOST, time_slot


def stage_row(
    pre: int = 0, dnn: int = 0, post: int = 0, dnn_in: int = 0, post_out: int = 0
) -> list[int]:
    """Each role's own work (``pre``, ``dnn``, ``post``), the DNN's inputs' copy onto its
    device (``dnn_in``) and the answers' copy to the host (``post_out``), ns."""
    row = [0] * len(TIMED)
    for (role, kind), ns in (
        (("preprocess", "preprocess"), pre),
        (("inference", TO_DEVICE), dnn_in),
        (("inference", "inference"), dnn),
        (("postprocess", "postprocess"), post),
        (("postprocess", TO_HOST), post_out),
    ):
        row[time_slot(role, kind)] = ns
    return row
