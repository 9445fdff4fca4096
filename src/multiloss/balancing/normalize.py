"""``Normalize``: divide each loss by its typical magnitude, so scales stop deciding the update."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import check_choice, check_finite_float, check_probability
from multiloss.balancing._plan import Plan
from multiloss.balancing.base import Balancer
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.wrapper import Wrapper

__all__ = ["Normalize"]


class Normalize(Wrapper):
    """Hand the inner balancer ``loss_i / m_i``, with ``m_i`` the loss's running or initial size.

    With ``mode="running"``, ``m_i`` is a bias-corrected exponential moving average of
    ``|loss_i|`` (so ``m_i`` follows the loss and the gradient becomes close to that of
    ``log loss_i``: every task makes the same *relative* progress per step). With
    ``mode="initial"``, ``m_i`` is the first value seen (``loss_i / loss_i(0)``, the relative
    loss GradNorm uses). ``m_i`` is never differentiated, and the magnitude is used, so a
    negative loss keeps its sign.

    The statistics are updated at every call (every micro-batch), before the loss is divided,
    so the very first normalized loss is exactly 1 in magnitude.

    Args:
        inner: The balancer that sees the normalized losses (default ``Sum()``).
        mode: ``"running"`` or ``"initial"``.
        momentum: Decay of the running average (``"running"`` only), in (0, 1).
        eps: Floor of ``m_i``, so a loss that is exactly zero does not divide by zero.
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> weights = Normalize().backward({"small": 0.01 * w, "large": 100.0 * w})
        >>> {name: round(value, 4) for name, value in weights.items()}
        {'large': 0.01, 'small': 100.0}
        >>> round(float(w.grad), 4)  # each loss contributes (its gradient) / (its size): 1 + 1
        2.0
    """

    per_loss_state = True

    def __init__(
        self,
        inner: Balancer | None = None,
        *,
        mode: str = "running",
        momentum: float = 0.99,
        eps: float = 1e-8,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(inner, balance=balance)
        self.mode = check_choice(mode, "`mode` of Normalize", ("running", "initial"))
        self.momentum = check_probability(momentum, "`momentum` of Normalize")
        self.eps = check_finite_float(eps, "`eps` of Normalize", min_value=0.0, strict_min=True)
        self.mean: Tensor
        self.count: Tensor
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        zeros = torch.zeros(len(names), dtype=torch.float32, device=device)
        self.register_buffer("mean", zeros)
        self.register_buffer("count", torch.zeros((), dtype=torch.float32, device=device))

    @torch.no_grad()
    def _update(self, values: Tensor) -> Tensor:
        magnitude = values.abs()
        self.count.add_(1.0)
        if self.mode == "initial":
            first = self.count == 1.0
            self.mean.copy_(torch.where(first, magnitude, self.mean))
            return self.mean.clamp_min(self.eps)
        self.mean.mul_(self.momentum).add_(magnitude, alpha=1.0 - self.momentum)
        return self.scales_now()

    def scales_now(self) -> Tensor:
        """The current divisors ``m_i`` (bias-corrected for the running mean)."""
        if self.mode == "initial":
            return self.mean.clamp_min(self.eps)
        # In float64: 1 - 0.99 ** 1 in float32 is off in the 7th digit.
        count = self.count.to(torch.float64)
        correction = 1.0 - torch.pow(torch.full_like(count, self.momentum), count)
        return (self.mean / correction.clamp_min(1e-12).to(self.mean)).clamp_min(self.eps)

    def plan(self, ctx: BalanceContext) -> Plan:
        factors = 1.0 / self._update(ctx.values)
        return self.inner.plan_for(ctx.derive(loss_scales=factors)).rescaled(factors)

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        if self._names is None:
            return {}
        scales = self.scales_now()
        return {f"scale/{name}": scales[i] for i, name in enumerate(self._names)}

    def hyperparameters(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"mode": self.mode}
        if self.mode == "running":
            fields["momentum"] = self.momentum
        return fields
