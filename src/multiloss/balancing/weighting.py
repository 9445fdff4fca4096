"""``LossWeighting``: methods that only reweight the losses.

A loss-weighting method decides one multiplier per balanced loss; the update is the ordinary
gradient of ``sum_i factor_i * weight_i * loss_i`` (plus the fixed losses), computed by a single
backward pass. No per-loss gradient is ever formed, so these methods cost what plain summation
costs (GradNorm, which needs per-loss gradient norms on one layer, is the exception).
"""

from __future__ import annotations

from abc import abstractmethod

from torch import Tensor

from multiloss.balancing._arrays import floats_on_host
from multiloss.balancing._plan import Extra, Plan
from multiloss.balancing.base import Balancer
from multiloss.balancing.context import BalanceContext, _watched

__all__ = ["LossWeighting"]


class LossWeighting(Balancer):
    """Base class of loss-weighting methods: implement :meth:`factors`.

    ``factors(ctx)`` returns ``(T,)`` detached multipliers of the fixed weights (so a maximized
    loss stays maximized); ``extra_loss(ctx)`` may return a scalar whose gradient trains the
    method's own parameters (it must not reach the model).

    Example:
        >>> import torch
        >>> class Inverse(LossWeighting):  # weigh each loss by 1 / its value
        ...     def factors(self, ctx):
        ...         return 1.0 / ctx.values
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> Inverse().backward({"a": 2 * w, "b": 4 * w})
        {'a': 0.5, 'b': 0.25}
        >>> w.grad  # each loss contributes (its gradient) / (its value): 1 + 1
        tensor(2.)
    """

    def _every_loss_needs_a_graph(self) -> bool:
        return False  # a constant loss is weighed like any other and contributes nothing

    @abstractmethod
    def factors(self, ctx: BalanceContext) -> Tensor:
        """``(T,)`` non-negative multipliers of ``ctx.weights``, detached, on ``ctx.device``."""

    def extra_loss(self, ctx: BalanceContext) -> Extra | None:
        """A loss on this balancer's own parameters, or None (or a function that builds it
        after the backward pass, see :class:`Plan`)."""
        return None

    def _writes_gradient_itself(self, ctx: BalanceContext, parameter: Tensor) -> bool:
        """Whether ``parameter``'s gradient (a small state on the host) may be written in
        closed form, by a ``Plan.extra`` function that returns ``None``, instead of built as a
        loss and differentiated: in float32 on the CPU, and nothing watches how its ``.grad``
        is written (hooks; DDP never owns a balancer's parameters). Saves the tensor
        arithmetic of the term and the backward nodes it adds to the pass."""
        scale = ctx.gradient_scale
        return (
            floats_on_host(parameter)
            and parameter.requires_grad
            and not _watched((parameter,))
            and not (isinstance(scale, Tensor) and scale.device.type != "cpu")
        )

    def plan(self, ctx: BalanceContext) -> Plan:
        factors = self.factors(ctx).detach()
        return Plan(loss_weights=factors * ctx.weights, extra=self.extra_loss(ctx))
