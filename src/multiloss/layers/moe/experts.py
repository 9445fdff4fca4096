"""The experts: E feed-forward networks stored as stacked weights, run without a Python loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multiloss.layers.moe.dispatch import (
    SlotPlan,
    SortedAssignments,
    blocked_slots,
    capacity_slots,
)
from multiloss.layers.moe.grouped import batched_mm, grouped_mm

__all__ = ["ACTIVATIONS", "ExpertFFN", "block_rows"]

#: Expert activations; the gated ones (``swiglu``, ``geglu``) use a fused 2*hidden projection.
ACTIVATIONS = ("swiglu", "geglu", "gelu", "relu", "silu")
_GATED: dict[str, Callable[[Tensor], Tensor]] = {"swiglu": F.silu, "geglu": F.gelu}
_PLAIN: dict[str, Callable[[Tensor], Tensor]] = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}


def block_rows(assignments: int, num_experts: int) -> int:
    """Rows per block of the blocked layout: the mean group size, rounded up to 8.

    Padding each group to this size wastes at most one block per expert, so the blocked
    product does at most twice the work of a perfect grouped product, and gathers at most
    ``2 * E`` copies of the expert weights.
    """
    mean = -(-assignments // num_experts)
    return max(8, -(-mean // 8) * 8)


class ExpertFFN(nn.Module):
    """E independent feed-forward networks ``dim -> hidden -> dim`` with stacked weights.

    Args:
        dim: Model width.
        hidden: Hidden width of each expert.
        num_experts: E.
        activation: One of :data:`ACTIVATIONS`.

    Example:
        >>> experts = ExpertFFN(8, 16, 4)
        >>> experts.w_in.shape, experts.w_out.shape
        (torch.Size([4, 8, 32]), torch.Size([4, 16, 8]))
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, activation: str = "swiglu"):
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.num_experts = num_experts
        self.activation = activation
        width = 2 * hidden if activation in _GATED else hidden
        # Stored (E, in, out): the layout grouped and batched products take without a copy.
        self.w_in = nn.Parameter(torch.empty(num_experts, dim, width))
        self.w_out = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert initialized like an ``nn.Linear`` of the same shape."""
        nn.init.uniform_(self.w_in, -1.0 / math.sqrt(self.dim), 1.0 / math.sqrt(self.dim))
        nn.init.uniform_(self.w_out, -1.0 / math.sqrt(self.hidden), 1.0 / math.sqrt(self.hidden))

    @property
    def widths(self) -> tuple[int, int, int]:
        """Row widths of the three operands of the products (alignment checks use them)."""
        return (self.dim, self.w_in.shape[-1], self.hidden)

    def activate(self, h: Tensor) -> Tensor:
        """The expert's nonlinearity (gated ones split the fused projection)."""
        gate = _GATED.get(self.activation)
        if gate is not None:
            a, b = h.chunk(2, dim=-1)
            return gate(a) * b
        return _PLAIN[self.activation](h)

    def forward_grouped(
        self, x: Tensor, sorted_: SortedAssignments, top_k: int, *, padded: bool = True
    ) -> Tensor:
        """Dropless, with ``torch._grouped_mm``. Returns (T, K, dim) per-assignment outputs.

        ``padded=False`` promises that every token is real (no mask), which skips two masking
        passes over the rows.
        """
        w_in, w_out = self.w_in.to(x.dtype), self.w_out.to(x.dtype)
        token = torch.div(sorted_.order, top_k, rounding_mode="floor")
        offsets = torch.cumsum(sorted_.counts, dim=0).to(torch.int32)
        rows = x[token]
        if padded:
            # Padding rows sort past the last group, where the kernel leaves garbage in its
            # output and its input gradient: `where` (not a product: NaN * 0 = NaN) keeps
            # them out in both directions. Without padding the groups cover every row.
            real = (sorted_.expert < self.num_experts)[:, None]
            rows = torch.where(real, rows, 0.0)
        h = self.activate(grouped_mm(rows, w_in, offsets))
        y = grouped_mm(h, w_out, offsets)
        if padded:
            y = torch.where(real, y, 0.0)
        inverse = torch.empty_like(sorted_.order).scatter_(
            0, sorted_.order, torch.arange(sorted_.order.numel(), device=x.device)
        )
        return y[inverse].view(-1, top_k, self.dim)

    def forward_slots(self, x: Tensor, plan: SlotPlan, rows_per_block: int) -> Tensor:
        """Capacity or blocked layout: one batched product over padded blocks of rows."""
        w_in, w_out = self.w_in.to(x.dtype), self.w_out.to(x.dtype)
        zero = x.new_zeros(1, self.dim)
        buffer = torch.cat([x, zero])[plan.source]
        blocks = buffer.view(-1, rows_per_block, self.dim)
        h = self.activate(batched_mm(blocks, w_in, plan.block_expert))
        y = batched_mm(h, w_out, plan.block_expert).reshape(-1, self.dim)
        top_k = plan.slot.numel() // x.shape[0]
        return torch.cat([y, zero])[plan.slot].view(-1, top_k, self.dim)

    def forward(
        self,
        x: Tensor,
        sorted_: SortedAssignments,
        top_k: int,
        *,
        capacity: int | None,
        grouped: bool,
        padded: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Run every assignment through its expert.

        Args:
            x: (T, dim) tokens in the compute dtype.
            sorted_: The assignments sorted by expert (see ``sort_assignments``).
            top_k: K.
            capacity: Slots per expert, or None for dropless.
            grouped: Use ``torch._grouped_mm`` (dropless only) instead of blocks.
            padded: Whether some tokens may be padding (False: ``sort_assignments`` had no
                mask).

        Returns:
            ``(outputs, kept)``: (T, K, dim) output of each assignment (zero where dropped or
            padding) and the (E,) int64 number of assignments each expert computed.
        """
        if capacity is not None:
            plan = capacity_slots(sorted_, capacity, top_k)
            return self.forward_slots(x, plan, capacity), plan.kept
        if grouped:
            return self.forward_grouped(x, sorted_, top_k, padded=padded), sorted_.counts
        rows = block_rows(sorted_.order.numel(), self.num_experts)
        plan = blocked_slots(sorted_, rows, top_k)
        return self.forward_slots(x, plan, rows), plan.kept

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, dim={self.dim}, hidden={self.hidden}, "
            f"activation={self.activation!r}"
        )
