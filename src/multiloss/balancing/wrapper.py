"""``Wrapper``: a balancer that transforms the losses or weights and delegates to another.

Wrappers compose like optax transforms: ``Normalize(PCGrad())`` hands PCGrad the normalized
losses, ``Scheduled(Uncertainty(), warmup=1000)`` ramps Uncertainty in from plain summation. The
inner balancer never knows: it sees a :class:`~multiloss.balancing.BalanceContext` like any
other, derived with ``ctx.derive(loss_scales=..., weights=...)``, and its plan is mapped back
with ``Plan.rescaled``.
"""

from __future__ import annotations

from collections.abc import Iterable

from multiloss._validation import describe
from multiloss.balancing._plan import Plan
from multiloss.balancing.base import Balancer
from multiloss.balancing.context import BalanceContext

__all__ = ["Wrapper"]


class Wrapper(Balancer):
    """Base class of balancers that wrap another (default inner: ``Sum()``).

    ``balance=`` may be given to the wrapper or to the inner balancer (not different values to
    both); the outermost balancer does the selection.

    Args:
        inner: The balancer that decides the update from the transformed losses.
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> class Doubled(Wrapper):  # hands the inner balancer twice the losses
        ...     def plan(self, ctx):
        ...         twice = torch.full_like(ctx.weights, 2.0)
        ...         return self.inner.plan_for(ctx.derive(loss_scales=twice)).rescaled(twice)
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> Doubled().backward({"a": 3 * w})
        {'a': 2.0}
        >>> w.grad
        tensor(6.)
    """

    def __init__(
        self, inner: Balancer | None = None, *, balance: str | Iterable[str] | None = None
    ) -> None:
        if inner is None:
            from multiloss.balancing.sum import Sum

            inner = Sum()
        if not isinstance(inner, Balancer):
            raise TypeError(
                f"`inner` of {type(self).__name__} must be a Balancer; got {describe(inner)}"
            )
        if balance is not None and inner.balance is not None:
            outer = [balance] if isinstance(balance, str) else list(balance)
            if sorted(set(outer)) != sorted(set(inner.balance)):
                raise ValueError(
                    f"`balance` is given to both {type(self).__name__} ({outer}) and its inner "
                    f"{type(inner).__name__} ({list(inner.balance)}); give it to one of them"
                )
        super().__init__(balance=inner.balance if balance is None else balance)
        self.inner = inner

    def plan(self, ctx: BalanceContext) -> Plan:
        return self.inner.plan_for(ctx)

    def _every_loss_needs_a_graph(self) -> bool:
        return self.inner._every_loss_needs_a_graph()
