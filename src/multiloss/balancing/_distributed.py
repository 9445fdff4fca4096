"""Averaging over processes, so a balancer under DDP sees the global batch.

A balancer that runs in every process of a data-parallel job must make the same decision in
every process, and the decision one process would make on the whole global batch: the loss
values it weighs by and the per-loss gradients it aggregates are therefore averaged over the
ranks first (the mean over ranks of per-rank means is the global mean for equal shards). One
collective per quantity per call, issued by every rank in the same order; nothing happens in a
single process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["mean_over_ranks", "world_size"]


def world_size() -> int:
    """Processes in the default group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def mean_over_ranks(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Each tensor averaged over the ranks (one all-reduce for all of them together)."""
    world = world_size()
    if world == 1 or not tensors:
        return list(tensors)
    flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    result: list[Tensor] = []
    offset = 0
    for tensor in tensors:
        count = tensor.numel()
        result.append(flat[offset : offset + count].view(tensor.shape).to(tensor.dtype))
        offset += count
    return result
