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

The cores are an argument (`pipelines.host.Host.cores`): nothing here reads the machine, so a
repository built for another machine (the NGC target) does not take this one's count.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvserve.pipelines.spec import Device

# DALI and engine threads per instance where the cores of the serving machine are unknown when
# the repository is built (the NGC target): DALI needs a number in its serialised graph, and 4 is
# what dali_backend's own examples and config docs use. The file's ``serving:`` threads override.
UNKNOWN_HOST_THREADS = 4


@dataclass(frozen=True)
class ServingDefaults:
    """What a pipeline is served with when nothing is overridden."""

    instances: int
    dali_threads: int
    torch_threads: int
    max_batch_size: int
    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...] = ()


def serving_defaults(device: Device, cores: int | None) -> ServingDefaults:
    """Defaults for ``device`` on a machine with ``cores`` cores; None: a machine not known when
    the repository is built, whose threads are `UNKNOWN_HOST_THREADS`."""
    if device == "gpu":
        return ServingDefaults(
            instances=2,
            dali_threads=UNKNOWN_HOST_THREADS if cores is None else max(2, cores // 4),
            torch_threads=1,
            max_batch_size=64,
            max_queue_delay_us=2000,
            preferred_batch_sizes=(32, 64),
        )
    threads = UNKNOWN_HOST_THREADS if cores is None else cores
    return ServingDefaults(
        instances=1,
        dali_threads=threads,
        torch_threads=threads,
        max_batch_size=8,
        max_queue_delay_us=0,
    )
