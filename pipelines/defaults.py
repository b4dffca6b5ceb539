"""Serving defaults derived from the machine: instances, threads and batching per device.

`cvserve repo build` (and every catalog pipeline) uses these unless told otherwise. They come out
of `cvserve bench efficiency` (README: "Served-path efficiency"): on a CPU-only machine one
instance per stage, with DALI and torch each using every core, keeps the preprocess → DNN
pipeline busy without oversubscribing — unless the DNN is light (under `LIGHT_DNN_GMACS`): then
decoding an image costs about as much as the DNN, both stages fighting over every core queue
behind each other, and giving each its share of the cores serves more (mobilenet_v3_large on 2
cores at 1920x1080: 70.7 img/s with 1 DALI + 1 torch thread vs 49.1 with 2 + 2; resnet50, 4.1
GMACs: every core to each stage is best). On a GPU, several preprocessing instances feed larger
dynamic batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvserve.deploy.host import usable_cores
from cvserve.pipelines.spec import Device


@dataclass(frozen=True)
class ServingDefaults:
    """What a pipeline is served with when nothing is overridden."""

    instances: int
    dali_threads: int
    torch_threads: int
    max_batch_size: int
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...] = ()


# A DNN below this many multiply-adds per image (billions) is "light" on CPU: see the docstring.
LIGHT_DNN_GMACS = 1.0


def serving_defaults(
    device: Device, cores: int | None = None, dnn_gmacs: float | None = None
) -> ServingDefaults:
    """Defaults for ``device`` on a machine with ``cores`` cores (default: this one), serving a
    DNN of ``dnn_gmacs`` billion multiply-adds per image (None: unknown, treated as heavy)."""
    cores = cores or usable_cores()
    if device == "gpu":
        return ServingDefaults(
            instances=2,
            dali_threads=max(2, cores // 4),
            torch_threads=1,
            max_batch_size=64,
            max_queue_delay_us=2000,
            preferred_batch_sizes=(32, 64),
        )
    if dnn_gmacs is not None and dnn_gmacs < LIGHT_DNN_GMACS:
        dali_threads = max(1, cores // 2)
        return ServingDefaults(
            instances=1,
            dali_threads=dali_threads,
            torch_threads=max(1, cores - dali_threads),
            max_batch_size=8,
            max_queue_delay_us=2000,
        )
    return ServingDefaults(
        instances=1,
        dali_threads=cores,
        torch_threads=cores,
        max_batch_size=8,
        max_queue_delay_us=2000,
    )
