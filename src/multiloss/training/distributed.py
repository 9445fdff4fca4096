"""The distributed context: who we are in a process group, and the few collectives we use.

One code path serves 1 and N processes: with a single process every collective is the
identity, so the trainer never branches on the world size. All collectives here are issued by
every rank in the same order, once per step (the guard) or once per log period (the metrics),
never per loss.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

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
        """More than one process."""
        return self.world_size > 1

    def all(self, flags: Tensor) -> Tensor:
        """Element-wise: true on every rank only where ``flags`` is true on every rank."""
        if not self.active:
            return flags
        value = flags.to(torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return value.bool()

    def mean_with_keys(self, values: Tensor, keys: Sequence[str]) -> Tensor:
        """The mean over ranks of ``values`` (float64), after checking every rank has ``keys``.

        A digest of the key list travels in the same all-reduce, so a rank that logged other
        names (a loss emitted on one rank only) is caught instead of silently misaligned.
        """
        if not self.active:
            return values
        digest = int(hashlib.sha256("\x00".join(keys).encode()).hexdigest()[:12], 16)
        payload = torch.cat(
            [
                values.double(),
                torch.tensor([float(digest)], dtype=torch.float64, device=values.device),
            ]
        )
        dist.all_reduce(payload, op=dist.ReduceOp.SUM)
        if payload[-1].item() != float(digest) * self.world_size:
            raise RuntimeError(
                f"rank {self.rank}: the ranks logged different losses or metrics this period; "
                "every rank must produce the same names each step (emit a loss on every rank, "
                f"as zero if need be). This rank has {len(keys)} keys: {list(keys)[:8]}..."
            )
        return payload[:-1] / self.world_size

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Average ``.grad`` over ranks (used where DDP's own reduction was bypassed)."""
        if not self.active:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            count = grad.numel()
            grad.copy_(flat[offset : offset + count].view_as(grad))
            offset += count

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a small Python object)."""
        if not self.active:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a Python-object collective: checkpoints only).

        ``obj`` may hold tensors: it travels as ``torch.save`` bytes (``all_gather_object``'s
        own pickling of tensors does not round-trip), read back with ``weights_only=True``.
        """
        if not self.active:
            return [obj]
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        blobs: list[Any] = [None] * self.world_size
        dist.all_gather_object(blobs, buffer.getvalue())
        return [torch.load(io.BytesIO(blob), weights_only=True) for blob in blobs]
