"""``RLW``: Random Loss Weighting (Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random
Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import check_choice
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["RLW"]

_DISTRIBUTIONS = ("normal", "uniform", "dirichlet")


class RLW(LossWeighting):
    """Fresh random weights at every optimizer step, on the simplex (they sum to 1).

    The micro-batches of an accumulated step share one draw, as one backward pass of the
    whole batch would (LibMTL draws once per update); drawn per micro-batch, the step's
    effective weights would average ``k`` draws and shrink towards ``1/T`` each.

    The default, ``softmax`` of standard-normal samples, is the paper's main variant and the one
    in the authors' LibMTL. ``"uniform"`` applies the softmax to U(0, 1) samples and
    ``"dirichlet"`` samples Dir(1, ..., 1) directly (two of the paper's other distributions).
    Sampling happens on the losses' device from torch's global generator (seed it for
    reproducibility); nothing syncs. Note that weights summing to 1 make the total ``1/T`` of
    Sum's on average: adjust the learning rate, or wrap in ``Static``.

    Args:
        distribution: ``"normal"``, ``"uniform"`` or ``"dirichlet"``.
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> weights = RLW().backward({"a": w, "b": w, "c": w})
        >>> round(sum(weights.values()), 6)
        1.0
    """

    def __init__(
        self, *, distribution: str = "normal", balance: str | Iterable[str] | None = None
    ) -> None:
        super().__init__(balance=balance)
        self.distribution = check_choice(distribution, "`distribution` of RLW", _DISTRIBUTIONS)
        self._draw: Tensor | None = None  # this optimizer step's weights, once drawn

    def factors(self, ctx: BalanceContext) -> Tensor:
        draw = self._draw
        if draw is None or draw.shape != (ctx.num_losses,) or draw.device != ctx.device:
            draw = self._draw = self._sample(ctx.num_losses, ctx.device)
        return draw

    def on_optimizer_step(self) -> None:
        self._draw = None

    def _sample(self, count: int, device: torch.device) -> Tensor:
        if self.distribution == "dirichlet":
            ones = torch.ones(count, device=device)
            return torch.distributions.Dirichlet(ones).sample()
        if self.distribution == "uniform":
            draws = torch.rand(count, device=device)
        else:
            draws = torch.randn(count, device=device)
        return torch.softmax(draws, dim=0)

    def hyperparameters(self) -> dict[str, Any]:
        return {"distribution": self.distribution}
