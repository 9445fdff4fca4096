"""Mean squared error, with a strict shape check instead of broadcasting."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from multiloss.losses.base import Loss

__all__ = ["MeanSquared"]


class MeanSquared(Loss):
    """``mean((input - target) ** 2)``: the regression loss ``Automatic`` falls back to.

    The target must have the input's shape (a trailing dimension of size 1 may differ); an
    integer target is cast to the input's dtype. Unlike ``F.mse_loss``, an ``(N, 1)`` input and
    an ``(N, 3)`` target are an error, not a broadcast.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> float(MeanSquared()(torch.tensor([1.0, 3.0]), torch.tensor([0, 1])))
        2.5
    """

    name: ClassVar[str] = "mean_squared"

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = self._check_input(input, target)
        target = self._aligned_target(input, target)
        return F.mse_loss(input, target, reduction=self.reduction)
