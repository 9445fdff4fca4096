"""The distributed context: who we are in a process group, and the few collectives we use.

One code path serves 1 and N processes: with a single process every collective is the
identity, so the trainer never branches on the world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistContext"]


@dataclass(frozen=True)
class DistContext:
    """Rank and world size, and collectives that are no-ops for one process."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def detect(cls) -> DistContext:
        """The context of the initialized default process group, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all(self, flag: Tensor) -> Tensor:
        """True on every rank only if ``flag`` is true on every rank (all ranks decide alike)."""
        if not self.active:
            return flag
        value = flag.to(torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return value.bool()

    def mean(self, tensor: Tensor) -> Tensor:
        """The element-wise mean of ``tensor`` over ranks (one collective)."""
        if not self.active:
            return tensor
        reduced = tensor.clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / self.world_size
