"""Token dispatch plans: where each (token, choice) assignment goes, without a host sync.

Every plan starts from one stable sort of the assignments by expert, so each expert's tokens
are contiguous and keep a well-defined priority order inside their group. From there:

* ``grouped`` (dropless): the sorted rows feed a grouped matrix product directly; group
  boundaries are the cumulative counts.
* ``capacity``: each expert has ``C`` slots; an assignment whose rank in its group is ``>= C``
  is dropped. The slots form an (E, C) buffer for one batched product.
* ``blocked`` (dropless, where grouped products are unavailable): each expert's group is
  padded to a multiple of a block size, so every block of rows belongs to one expert and the
  blocks go through one batched product. The number of blocks has a static bound,
  ``ceil(A / block) + E``, so shapes never depend on the data.

Padding tokens (``valid`` False) get the sentinel expert ``E``: they sort last, take no slot
and are never computed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DROP_POLICIES",
    "SortedAssignments",
    "SlotPlan",
    "blocked_slots",
    "capacity_slots",
    "sort_assignments",
]

#: Which assignments a full expert keeps: highest gate first, or earliest token first.
DROP_POLICIES = ("probability", "position")


class SortedAssignments(NamedTuple):
    """The assignments of one forward, stably sorted by expert.

    Attributes:
        order: (A,) index into the flattened (T * K) assignments, grouped by expert.
        expert: (A,) expert of each sorted assignment; ``E`` for padding.
        rank: (A,) position of each sorted assignment inside its expert's group.
        counts: (E,) int64 real assignments per expert.
    """

    order: Tensor
    expert: Tensor
    rank: Tensor
    counts: Tensor


class SlotPlan(NamedTuple):
    """Assignments placed into a padded buffer of ``slots`` rows (plus one spare row).

    Attributes:
        slot: (A,) buffer row of each assignment in original (token, choice) order; the spare
            row ``slots`` for dropped and padding assignments.
        source: (slots,) token that fills each buffer row; ``T`` (a zero row) when empty.
        block_expert: (slots // block,) expert of each block of rows, or None when block ``e``
            simply is expert ``e`` (the capacity layout).
        kept: (E,) int64 assignments each expert computes.
    """

    slot: Tensor
    source: Tensor
    block_expert: Tensor | None
    kept: Tensor


def sort_assignments(
    index: Tensor,
    valid: Tensor | None,
    num_experts: int,
    priority: Tensor | None = None,
) -> SortedAssignments:
    """Stable sort of the (token, choice) assignments by expert.

    Args:
        index: (T, K) chosen experts.
        valid: (T,) real-token mask or None.
        num_experts: E.
        priority: Optional (T, K) score; inside each expert's group, higher scores come
            first (ties keep token order). Without it, groups keep token order.
    """
    top_k = index.shape[-1]
    key = index.reshape(-1)
    if valid is not None:
        key = torch.where(valid[:, None].expand(-1, top_k).reshape(-1), key, num_experts)
    if priority is None:
        order = torch.argsort(key, stable=True)
    else:
        by_priority = torch.argsort(priority.reshape(-1), descending=True, stable=True)
        order = by_priority[torch.argsort(key[by_priority], stable=True)]
    expert = key[order]
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=index.device)
    counts = counts.scatter_add_(0, key, torch.ones_like(key))
    start = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(key.numel(), device=index.device) - start[expert]
    return SortedAssignments(order, expert, rank, counts[:num_experts])


def _place(
    sorted_: SortedAssignments, row: Tensor, keep: Tensor, slots: int, top_k: int
) -> tuple[Tensor, Tensor]:
    """Slot of every assignment (original order) and the token that fills every slot."""
    spare = torch.full_like(row, slots)
    row = torch.where(keep, row, spare)
    slot = torch.empty_like(row).scatter_(0, sorted_.order, row)
    tokens = slot.numel() // top_k
    token = torch.div(sorted_.order, top_k, rounding_mode="floor")
    # Dropped assignments all write to the spare row, which is cut off below.
    source = torch.full((slots + 1,), tokens, dtype=row.dtype, device=row.device)
    source = source.scatter_(0, row, token)
    return slot, source[:slots]


def capacity_slots(sorted_: SortedAssignments, capacity: int, top_k: int) -> SlotPlan:
    """An (E, capacity) buffer: expert ``e`` owns rows ``e * capacity ...``; overflow drops."""
    experts = sorted_.counts.numel()
    keep = (sorted_.rank < capacity) & (sorted_.expert < experts)
    row = sorted_.expert * capacity + sorted_.rank
    slot, source = _place(sorted_, row, keep, experts * capacity, top_k)
    return SlotPlan(slot, source, None, sorted_.counts.clamp_max(capacity))


def blocked_slots(sorted_: SortedAssignments, block: int, top_k: int) -> SlotPlan:
    """Dropless: each expert's group padded to a multiple of ``block`` rows."""
    experts = sorted_.counts.numel()
    assignments = sorted_.order.numel()
    blocks = -(-assignments // block) + experts  # static upper bound on the blocks used
    padded = torch.div(sorted_.counts + block - 1, block, rounding_mode="floor") * block
    end = torch.cumsum(padded, dim=0)
    start = end - padded
    keep = sorted_.expert < experts
    row = start[sorted_.expert.clamp_max(experts - 1)] + sorted_.rank
    slot, source = _place(sorted_, row, keep, blocks * block, top_k)
    first_row = torch.arange(blocks, device=end.device) * block
    # Blocks past the last group hold only empty rows; any expert will do for them.
    block_expert = torch.searchsorted(end, first_row, right=True).clamp_max(experts - 1)
    return SlotPlan(slot, source, block_expert, sorted_.counts)
