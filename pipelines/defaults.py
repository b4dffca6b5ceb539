"""Serving defaults for the machine: instances, threads and batching per device, used where
neither the pipeline nor `cvserve tune` (`pipelines.tuned`) says otherwise.

On a CPU-only machine: one instance per stage, DALI and the DNN engine each with every core (a
stage that waits uses none), and no queue delay — at one request in flight a batch cannot form,
and waiting for one only adds latency (`cvserve profile --concurrency 1`: queueing 17 % of
end-to-end with 2 ms, 2 % with 0), while under load requests queue behind the running batch and
batch anyway. How to split the cores when decoding costs about as much as the DNN (a light
network: mobilenet_v3_large on 2 cores at 1920x1080 served 70.7 img/s with 1 DALI + 1 torch
thread vs 49.1 with 2 + 2) is measured per pipeline by `cvserve tune`, not guessed from the
network's size. On a GPU, several preprocessing instances feed larger dynamic batches.
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


def serving_defaults(device: Device, cores: int | None = None) -> ServingDefaults:
    """Defaults for ``device`` on a machine with ``cores`` cores (default: this one)."""
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
    return ServingDefaults(
        instances=1,
        dali_threads=cores,
        torch_threads=cores,
        max_batch_size=8,
        max_queue_delay_us=0,
    )
