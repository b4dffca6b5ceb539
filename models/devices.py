"""Where a stage's tensors live: the torch device of a Triton model instance, a tensor brought
to it, and waiting for a GPU's queued work. No Triton import: adapters and tests share it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def instance_device(args: Mapping[str, str]) -> str:
    """The torch device of a Triton model instance (its ``initialize`` args):
    ``cuda:<model_instance_device_id>`` for a KIND_GPU instance, else ``cpu``."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id', 0))}"
    return "cpu"


def on_device(tensor: Any, device: str, what: str) -> Any:
    """``tensor`` when it is on ``device``; a host tensor is moved to a GPU ``device`` (a
    client's request arrives on the host); anything else raises a `ValueError` naming both
    devices (a stage fed from another GPU than its own is a deployment error, not a copy to
    hide)."""
    import torch

    if tensor.device == torch.device(device):
        return tensor
    if tensor.device.type == "cpu":
        return tensor.to(device, non_blocking=True)
    raise ValueError(
        f"{what} arrived on {tensor.device}, but this instance runs on {device}: place the "
        "stages that exchange it on the same device"
    )


def settled(device: str) -> None:
    """Wait for the work queued on ``device`` (a GPU) so that a reader on another stream (Triton
    reading outputs) reads finished tensors; nothing on the CPU."""
    if device != "cpu":
        import torch

        torch.cuda.current_stream(device).synchronize()


def release(device: str) -> None:
    """Let go of what a stage holds on ``device`` (a GPU) before its stub exits: finish queued
    work and return cached blocks, so unloading does not wait on them (Triton's exit timeout
    covers the unload); nothing on the CPU."""
    if device != "cpu":
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
