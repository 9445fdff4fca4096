"""Contrastive loss on pairs with a margin (Hadsell, Chopra and LeCun, 2006)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from multiloss._validation import check_choice, check_finite_float
from multiloss.losses.base import Loss, describe_tensor, join_repr

__all__ = ["Contrastive"]

_INPUTS = ("distance", "embeddings")


class Contrastive(Loss):
    """Pull similar pairs together, push dissimilar ones at least ``margin`` apart.

    Per pair with distance ``d`` and label ``y`` (1 or True = similar, 0 = dissimilar)::

        loss = y * d**2 + (1 - y) * max(margin - d, 0)**2

    (Hadsell et al. 2006 write the same with a factor 1/2 and the label flipped.)

    Args:
        margin: How far apart dissimilar pairs must be before they stop contributing (> 0).
        input: ``"distance"``: the input holds one distance per pair, shape ``(N,)``;
            ``"embeddings"``: it holds both embeddings of each pair, either as one tensor of
            shape ``(N, 2, D)`` or as a pair ``(a, b)`` of ``(N, D)`` tensors, and the
            Euclidean distance is computed here.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> loss = Contrastive(margin=1.0)
        >>> d = torch.tensor([0.5, 0.25])          # a similar pair, then a dissimilar one
        >>> float(loss(d, torch.tensor([1, 0])))   # (0.5**2 + 0.75**2) / 2
        0.40625
    """

    name: ClassVar[str] = "contrastive"

    def __init__(
        self, *, margin: float = 1.0, input: str = "distance", reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=reduction)
        self.margin = check_finite_float(
            margin, "`margin` of Contrastive", min_value=0.0, strict_min=True
        )
        self.input = check_choice(input, "`input` of Contrastive", _INPUTS)

    def _distance(self, input: Any, target: Any) -> Tensor:
        if self.input == "distance":
            return self._check_input(input, target, "a floating-point tensor of distances")
        if isinstance(input, Tensor):
            if input.dim() != 3 or input.shape[1] != 2 or not input.is_floating_point():
                raise self._mismatch(
                    input, target, "pair embeddings must be a float tensor of shape (N, 2, D)"
                )
            first, second = input[:, 0], input[:, 1]
        elif isinstance(input, Sequence) and len(input) == 2:
            first, second = input
            if not (
                isinstance(first, Tensor)
                and isinstance(second, Tensor)
                and first.shape == second.shape
                and first.is_floating_point()
            ):
                raise self._mismatch(
                    input,
                    target,
                    "the two embeddings of a pair must be float tensors of one shape; got "
                    f"{describe_tensor(first)} and {describe_tensor(second)}",
                )
        else:
            raise self._mismatch(
                input, target, "pair embeddings must be an (N, 2, D) tensor or a pair (a, b)"
            )
        return F.pairwise_distance(first, second)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        distance = self._distance(input, target)
        similar = self._aligned_target(distance, target)
        if target.dtype != torch.bool:
            self._check_unit_interval(
                similar, "target", "pair labels", "1 = similar, 0 = dissimilar"
            )
        pushed = F.relu(self.margin - distance)
        values = similar * distance.square() + (1 - similar) * pushed.square()
        return self._reduce(values)

    def extra_repr(self) -> str:
        return join_repr(
            f"margin={self.margin!r}",
            f"input={self.input!r}" if self.input != "distance" else "",
            super().extra_repr(),
        )
