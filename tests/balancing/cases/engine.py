"""Test-only gradient-level balancers that exercise the per-loss gradient engine.

``Mean`` gives every objective the coefficient 1, so its update must equal Sum's exactly, at
the parameter and at the representation level; ``ExplicitMean`` returns the same update as
explicit tensors (the ``combine`` path).
"""

from __future__ import annotations

import torch
from torch import Tensor

from multiloss.balancing import BalanceContext, GradientBalancer, Jacobian
from tests.balancing.properties import BalancerCase


class Mean(GradientBalancer):
    """Coefficient 1 for every objective: Sum, computed the gradient-level way."""

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        return torch.ones(ctx.num_losses, device=gramian.device)


class ExplicitMean(GradientBalancer):
    """The same update, returned as explicit tensors."""

    def combine(self, jacobian: Jacobian, ctx: BalanceContext) -> list[Tensor]:
        return jacobian.combine(torch.ones(ctx.num_losses, device=ctx.device))


CASES = [
    BalancerCase("engine-mean", Mean),
    BalancerCase("engine-mean-rep", lambda **kw: Mean(level="representation", **kw)),
    BalancerCase("engine-explicit", ExplicitMean),
    BalancerCase("engine-explicit-rep", lambda **kw: ExplicitMean(level="representation", **kw)),
]
