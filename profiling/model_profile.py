"""Profile any model a Triton server serves, cvserve's or not (``cvserve profile --triton-url
HOST:PORT --model NAME``).

Inputs come from the model's metadata: an encoded-image input (UINT8 with one variable dimension,
or BYTES) gets generated JPEGs of each size; any other input a seeded random tensor of its
declared shape (a variable dimension becomes ``dynamic_dim``). Each size × concurrency point is a
closed loop; the per-model split is the statistics API's counters before and after the point, for
the model and, for an ensemble, each composing model (as perf_analyzer reports it: queue, compute
input, compute infer, compute output per request). Per-request traces are not used here: the
split is per model, averaged over the point's requests, and the report says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from cvserve.deploy.triton_grpc import grpc_client
from cvserve.pipelines.spec import dtype_from_triton
from cvserve.preprocess.synthetic import synthetic_image
from cvserve.profiling import tritonstats
from cvserve.profiling.load import Sender, closed_loop, warm_up
from cvserve.profiling.machine import machine_info

SPLIT_SOURCE = (
    "statistics API: per-model counter deltas over each point, averaged per request "
    "(no per-request traces)"
)


class ModelNotServed(LookupError):
    """The server does not serve (or cannot describe) the model asked for."""


@dataclass(frozen=True)
class InputPlan:
    """How one input of the model is filled: ``image`` (encoded JPEG bytes) or a tensor."""

    name: str
    datatype: str  # Triton's, e.g. FP32
    shape: tuple[int, ...]  # without the batch dimension; -1 = variable
    image: bool

    def tensor(self, batched: bool, dynamic_dim: int, seed: int) -> np.ndarray:
        """A seeded random tensor of this input's shape (with a batch of 1 when ``batched``)."""
        shape = tuple(dynamic_dim if d < 0 else d for d in self.shape)
        shape = (1, *shape) if batched else shape
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype_from_triton(self.datatype))
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(dtype)
        return rng.integers(0, 100, shape).astype(dtype)


@dataclass(frozen=True)
class ModelPlan:
    """The model, its inputs, outputs, whether Triton batches it, and its composing models."""

    name: str
    inputs: tuple[InputPlan, ...]
    outputs: tuple[str, ...]
    batched: bool
    composing: tuple[str, ...]

    @property
    def takes_images(self) -> bool:
        return any(i.image for i in self.inputs)

    @property
    def models(self) -> tuple[str, ...]:
        """The composing models first (in the ensemble's order), the model itself last."""
        return (*self.composing, self.name)


def plan_model(client: grpcclient.InferenceServerClient, name: str) -> ModelPlan:
    """Read ``name``'s metadata and config from the server."""
    try:
        metadata = client.get_model_metadata(name, as_json=True)
        config = client.get_model_config(name, as_json=True)["config"]
    except grpcclient.InferenceServerException as exc:
        raise ModelNotServed(f"the server has no model {name!r} ready: {exc.message()}") from None
    batched = int(config.get("max_batch_size", 0)) > 0
    inputs = []
    for entry in metadata.get("inputs", []):
        shape = tuple(int(d) for d in entry.get("shape", []))
        shape = shape[1:] if batched else shape
        datatype = entry["datatype"]
        image = datatype == "BYTES" or (datatype == "UINT8" and len(shape) == 1 and shape[0] < 0)
        inputs.append(InputPlan(entry["name"], datatype, shape, image))
    steps = config.get("ensemble_scheduling", {}).get("step", [])
    return ModelPlan(
        name=name,
        inputs=tuple(inputs),
        outputs=tuple(o["name"] for o in metadata.get("outputs", [])),
        batched=batched,
        composing=tuple(dict.fromkeys(s["model_name"] for s in steps)),
    )


def request_inputs(
    plan: ModelPlan, image: bytes, dynamic_dim: int, seed: int
) -> list[grpcclient.InferInput]:
    """One request's inputs: ``image`` in every encoded-image input, tensors elsewhere."""
    tensors = []
    for i, item in enumerate(plan.inputs):
        if item.image and item.datatype == "BYTES":
            value = np.array([image], dtype=object)
        elif item.image:
            value = np.frombuffer(image, np.uint8)
        else:
            value = item.tensor(plan.batched, dynamic_dim, seed + i)
        if item.image and plan.batched:
            value = value[None]
        tensor = grpcclient.InferInput(item.name, list(value.shape), item.datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def model_senders(
    url: str, plan: ModelPlan, images: Sequence[bytes], dynamic_dim: int
) -> Callable[[], Sender]:
    """A `closed_loop` sender factory: request ``i`` carries ``images[i % len]`` (and tensors);
    an error response raises, so the loop counts it."""
    requests = [request_inputs(plan, image, dynamic_dim, seed) for seed, image in enumerate(images)]
    outputs = [grpcclient.InferRequestedOutput(n) for n in plan.outputs]

    def make_sender() -> Sender:
        client = grpc_client(url)

        def send(i: int) -> None:
            client.infer(plan.name, requests[i % len(requests)], outputs=outputs)

        send.close = client.close  # type: ignore[attr-defined]
        return send

    return make_sender


def split_of(delta: tritonstats.ModelStats) -> dict[str, Any]:
    return {
        "requests": delta.requests,
        "executions": delta.executions,
        "ns": dict(delta.ns),
        "mean_ms": {p: round(delta.mean_ms(p), 3) for p in tritonstats.PHASES},
        "batches": {str(k): v for k, v in sorted(delta.batches.items())},
    }


def profile_model(
    url: str,
    name: str,
    sizes: Sequence[tuple[int, int]],
    concurrency: Sequence[int],
    duration_s: float,
    images_per_size: int = 4,
    dynamic_dim: int = 16,
    on_point: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Every point's throughput, latency and per-model split; sizes apply only to a model with
    an encoded-image input (a tensor model runs one point per concurrency)."""
    client = grpc_client(url)
    try:
        plan = plan_model(client, name)
        size_list = list(sizes) if plan.takes_images else [(0, 0)]
        points = []
        for width, height in size_list:
            images = [
                synthetic_image(width, height, seed) if plan.takes_images else b""
                for seed in range(images_per_size)
            ]
            make_sender = model_senders(url, plan, images, dynamic_dim)
            warm_up(make_sender, 2)
            for c in concurrency:
                before = tritonstats.fetch_settled(client, list(plan.models))
                result = closed_loop(make_sender, c, duration_s=duration_s)
                after = tritonstats.fetch_settled(client, list(plan.models))
                label = f"{width}x{height} c={c}" if plan.takes_images else f"tensors c={c}"
                point = {
                    "label": label,
                    "size": f"{width}x{height}" if plan.takes_images else None,
                    **result.summary(),
                    "models": {m: split_of(after[m] - before[m]) for m in plan.models},
                }
                points.append(point)
                on_point(
                    f"  {label}: {result.throughput:.1f} req/s, p50 {point['p50_ms']} ms, "
                    f"{result.requests} requests, {result.errors} errors"
                )
    finally:
        client.close()
    return {
        "benchmark": "profile-model",
        "model": name,
        "server": url,
        "split_source": SPLIT_SOURCE,
        "inputs": [
            {"name": i.name, "datatype": i.datatype, "shape": list(i.shape), "image": i.image}
            for i in plan.inputs
        ],
        "composing_models": list(plan.composing),
        "machine": machine_info(),
        "points": points,
    }


def split_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Table rows: point, model, requests, then mean ms per phase."""
    rows = []
    for point in summary["points"]:
        for model, split in point["models"].items():
            rows.append(
                [
                    point["label"],
                    model,
                    str(split["requests"]),
                    *(f"{split['mean_ms'][p]:.2f}" for p in tritonstats.PHASES),
                ]
            )
    return rows


def write_model_run(folder: Path, summary: dict[str, Any]) -> Path:
    """``folder/summary.json`` and ``folder/split.csv`` (one row per point × model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    header = ["point", "model", "requests", *(f"{p}_ms" for p in tritonstats.PHASES)]
    lines = [",".join(header), *(",".join(r) for r in split_rows(summary))]
    (folder / "split.csv").write_text("\n".join(lines) + "\n")
    return folder
