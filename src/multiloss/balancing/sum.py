"""``Sum``: every loss at its fixed weight (linear scalarization), the baseline of all methods."""

from __future__ import annotations

from multiloss.balancing._plan import Plan
from multiloss.balancing.base import Balancer
from multiloss.balancing.context import BalanceContext

__all__ = ["Sum"]


class Sum(Balancer):
    """The plain weighted sum ``sum_i weight_i * loss_i``: what training without a balancer does.

    Args:
        balance: Losses to balance (all by default); with Sum the choice changes nothing.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> Sum().backward({"a": 2 * w, "b": w**2})
        {'a': 1.0, 'b': 1.0}
        >>> w.grad
        tensor(4.)
    """

    def plan(self, ctx: BalanceContext) -> Plan:
        return ctx.sum_plan()

    def _every_loss_needs_a_graph(self) -> bool:
        return False  # a constant contributes nothing, as in plain summation
