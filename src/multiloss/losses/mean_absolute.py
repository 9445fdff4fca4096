"""Mean absolute error, with a strict shape check instead of broadcasting."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from multiloss.losses.base import Loss

__all__ = ["MeanAbsolute"]


class MeanAbsolute(Loss):
    """``mean(|input - target|)``, robust to outliers in the target.

    The target must have the input's shape (a trailing dimension of size 1 may differ); an
    integer target is cast to the input's dtype.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> float(MeanAbsolute()(torch.tensor([1.0, -3.0]), torch.tensor([0.0, 0.0])))
        2.0
    """

    name: ClassVar[str] = "mean_absolute"

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = self._check_input(input, target)
        target = self._aligned_target(input, target)
        return F.l1_loss(input, target, reduction=self.reduction)
