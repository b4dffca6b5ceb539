"""`CudaGraphs`: a network's forward pass on a CUDA GPU replayed from one captured CUDA graph per
batch bucket, where the network allows it.

Eager PyTorch launches every kernel from Python; a captured graph launches the whole pass at
once (ResNet-50 fp16 channels-last on an H200, batch 32: 8,219 img/s eager, 13,454 from one
graph; ../shared/FINDINGS.md). Graphs have static shapes: a batch of n images runs in the
graph of the smallest bucket ≥ n (powers of two up to the largest batch seen), its rows
zero-padded and the outputs cut back to n — rows are independent in an eval-mode network.

A network that synchronises with the host in its forward pass (a detector choosing boxes with
``nonzero``, ``.item()``) cannot be captured: that is found once, by running it eagerly under
``torch.cuda.set_sync_debug_mode("error")`` before any capture, and it then always runs eagerly
(said in the log). A capture that fails for another reason also leaves that bucket eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Forward = Callable[[Any], list[Any]]


def bucket(n: int) -> int:
    """The graph size a batch of ``n`` runs in: the next power of two (1, 2, 4, …)."""
    return 1 << max(0, n - 1).bit_length()


class CudaGraphs:
    """``CudaGraphs(forward, device)(x)`` = ``forward(x)`` for ``x`` (N, ...) on ``device``,
    replayed from a graph of `bucket` (N) rows when ``forward`` can be captured. Outputs are new
    tensors (the graph's own buffers are overwritten by the next replay)."""

    def __init__(self, forward: Forward, device: str, warmup: int = 2) -> None:
        self.forward = forward
        self.device = device
        self.warmup = warmup
        self.capturable: bool | None = None  # found on the first batch
        self.graphs: dict[tuple[Any, ...], tuple[Any, list[Any], Any]] = {}
        self.eager: set[tuple[Any, ...]] = set()  # buckets whose capture failed

    def __call__(self, x: Any) -> list[Any]:
        if self.capturable is None:
            self.capturable = self._syncs_free(x)
        if not self.capturable:
            return self.forward(x)
        n = len(x)
        key = (bucket(n), *x.shape[1:], x.dtype)
        if key in self.eager:
            return self.forward(x)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, x)
            if entry is None:
                return self.forward(x)
        static_in, static_out, graph = entry
        static_in[:n].copy_(x)
        if n < len(static_in):
            static_in[n:].zero_()
        graph.replay()
        return [o[:n].clone() for o in static_out]

    def _syncs_free(self, x: Any) -> bool:
        """Whether ``forward`` runs without a host synchronisation (so it can be captured)."""
        import torch

        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            self.forward(x)
        except RuntimeError as exc:
            log.info("no CUDA graphs (the network synchronises with the host: %s)", exc)
            return False
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return True

    def _capture(self, key: tuple[Any, ...], x: Any) -> tuple[Any, list[Any], Any] | None:
        import torch

        static_in = torch.zeros((key[0], *x.shape[1:]), dtype=x.dtype, device=self.device)
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up (cuDNN autotuning) off the capture
                for _ in range(self.warmup):
                    self.forward(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.forward(static_in)
        except RuntimeError as exc:
            log.warning("batch %d runs eagerly: its CUDA graph capture failed: %s", key[0], exc)
            self.eager.add(key)
            return None
        self.graphs[key] = (static_in, static_out, graph)
        return self.graphs[key]
