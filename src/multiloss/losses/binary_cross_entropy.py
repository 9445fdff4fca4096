"""Binary cross-entropy from probabilities (a sigmoid output) or from logits."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from multiloss._validation import check_choice, check_finite_float
from multiloss.losses.base import Loss, join_repr

__all__ = ["BinaryCrossEntropy"]

_INPUTS = ("probabilities", "logits")


class BinaryCrossEntropy(Loss):
    """``-mean(y log p + (1 - y) log(1 - p))`` for independent yes/no predictions.

    The target has the input's shape (a trailing dimension of size 1 may differ, so one logit
    per example against ``(N,)`` labels works) and may be float in [0, 1], bool or integer 0/1.
    A target (or, with ``input="probabilities"``, an input) outside [0, 1] is a ValueError that
    names it, rather than a negative loss (one min/max reduction per call; read at once on the
    CPU, at the log period on an accelerator).

    Args:
        input: ``"probabilities"`` (a sigmoid output, via ``F.binary_cross_entropy``) or
            ``"logits"`` (via the numerically stable ``F.binary_cross_entropy_with_logits``).
        pos_weight: Weight of the positive class (logits only), e.g. ``n_negative /
            n_positive`` for imbalanced labels.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import math, torch
        >>> loss = BinaryCrossEntropy()
        >>> round(float(loss(torch.tensor([0.9, 0.2]), torch.tensor([True, False]))), 6)
        0.164252
        >>> round(-(math.log(0.9) + math.log(0.8)) / 2, 6)
        0.164252
    """

    name: ClassVar[str] = "binary_cross_entropy"
    pos_weight_tensor: Tensor | None

    def __init__(
        self,
        *,
        input: str = "probabilities",
        pos_weight: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        self.input = check_choice(input, "`input` of BinaryCrossEntropy", _INPUTS)
        self.pos_weight = (
            None
            if pos_weight is None
            else check_finite_float(
                pos_weight, "`pos_weight` of BinaryCrossEntropy", min_value=0.0, strict_min=True
            )
        )
        if self.pos_weight is not None and self.input != "logits":
            raise ValueError(
                f"`pos_weight` of BinaryCrossEntropy needs input='logits'; got input={self.input!r}"
            )
        # A buffer, so it follows .to(device) once instead of being copied there every call.
        self.register_buffer(
            "pos_weight_tensor",
            None if self.pos_weight is None else torch.tensor(self.pos_weight),
            persistent=False,
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = self._check_input(input, target)
        original = target
        target = self._aligned_target(input, target)
        if original.dtype != torch.bool:
            self._check_unit_interval(target, "target", "0/1 labels or label probabilities")
        if self.input == "probabilities":
            self._check_unit_interval(
                input, "input", "probabilities", "pass input='logits' for raw scores"
            )
            return F.binary_cross_entropy(input, target, reduction=self.reduction)
        pos_weight = self.pos_weight_tensor
        if pos_weight is not None and pos_weight.dtype != input.dtype:
            pos_weight = pos_weight.to(input.dtype)
        return F.binary_cross_entropy_with_logits(
            input, target, pos_weight=pos_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return join_repr(
            f"input={self.input!r}",
            f"pos_weight={self.pos_weight!r}" if self.pos_weight is not None else "",
            super().extra_repr(),
        )
