"""Negative log-likelihood of class indices under log-probabilities (a log-softmax output)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from multiloss._validation import check_int, check_values_in, describe
from multiloss.losses.base import Loss, join_repr

__all__ = ["NLL"]


class NLL(Loss):
    """``-mean(log_probs[i, target[i]])``: the loss for a log-softmax output and class indices.

    Args:
        class_dim: The dimension of the input that indexes the classes.
        class_weight: Optional 1-D tensor of per-class weights (a buffer).
        ignore_index: Targets equal to this are ignored.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import math, torch
        >>> log_probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]]).log()
        >>> round(float(NLL()(log_probs, torch.tensor([1, 1]))), 6)
        0.569717
        >>> round(-(math.log(0.8) + math.log(0.4)) / 2, 6)
        0.569717
    """

    name: ClassVar[str] = "nll"
    class_weight: Tensor | None

    def __init__(
        self,
        *,
        class_dim: int = 1,
        class_weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        self.class_dim = check_int(class_dim, "`class_dim` of NLL")
        self.ignore_index = check_int(ignore_index, "`ignore_index` of NLL")
        if class_weight is not None and (
            not isinstance(class_weight, Tensor)
            or class_weight.dim() != 1
            or not class_weight.is_floating_point()
        ):
            raise TypeError(
                "`class_weight` of NLL must be a 1-D floating-point tensor; got "
                f"{describe(class_weight)}"
            )
        self.register_buffer("class_weight", class_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = self._check_input(input, target, "a floating-point tensor of log-probabilities")
        dim = self._class_dim(input, target, self.class_dim)
        target = self._index_target(input, target, dim)
        self._check_class_weight(self.class_weight, input, dim)
        self._check_indices(input, target, dim, self.ignore_index)
        # log p <= 0; anything above (plus rounding) is not a log-probability and would give a
        # negative loss.
        check_values_in(
            input,
            lambda: f"`input` of {self!r}",
            key=(id(self), "input"),
            low=-math.inf,
            high=1e-4,
            expected="hold log-probabilities (<= 0, a log_softmax output; use CrossEntropy "
            "for logits)",
        )
        canonical = 1 if input.dim() >= 2 else 0
        if dim != canonical:
            input = input.movedim(dim, canonical)
        return F.nll_loss(
            input,
            target,
            weight=self.class_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return join_repr(
            f"class_dim={self.class_dim}" if self.class_dim != 1 else "",
            "class_weight=<tensor>" if self.class_weight is not None else "",
            f"ignore_index={self.ignore_index}" if self.ignore_index != -100 else "",
            super().extra_repr(),
        )
