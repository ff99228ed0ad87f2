"""Batching for truncated back-propagation through time (contiguous streams, carried state)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from memlens.core.errors import MemlensError


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """Cut a 1-D id stream into ``batch`` contiguous streams: returns (T x batch).

    Stream b is ids[b*T:(b+1)*T]; the tail that does not fill a column is dropped.
    """
    if batch < 1:
        raise MemlensError(f"batch size must be positive, got {batch}")
    steps = ids.numel() // batch
    if steps < 2:
        raise MemlensError(f"corpus of {ids.numel()} tokens is too short for batch size {batch}")
    return ids[: steps * batch].view(batch, steps).t().contiguous()


def bptt_windows(data: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, targets) windows of at most ``bptt`` steps over batchified ``data``.

    Consecutive windows continue the same streams, so the caller carries (detached) state.
    """
    if bptt < 1:
        raise MemlensError(f"BPTT length must be positive, got {bptt}")
    for start in range(0, data.shape[0] - 1, bptt):
        length = min(bptt, data.shape[0] - 1 - start)
        yield data[start:start + length], data[start + 1:start + 1 + length]
