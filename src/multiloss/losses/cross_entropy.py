"""Cross-entropy from logits, probabilities or log-probabilities, on index or soft targets."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from multiloss._validation import (
    check_choice,
    check_finite_float,
    check_int,
    check_values_in,
    describe,
)
from multiloss.losses.base import Loss, join_repr

__all__ = ["CrossEntropy"]

_INPUTS = ("logits", "probabilities", "log_probabilities")
_TARGETS = ("auto", "index", "probabilities")


class CrossEntropy(Loss):
    """Cross-entropy ``-sum_c q_c log p_c`` averaged over the batch.

    The prediction ``p`` comes as logits (a final linear layer), probabilities (a softmax
    output) or log-probabilities (a log-softmax output); all three go through
    ``F.cross_entropy``, since ``log_softmax`` of normalized log-probabilities is the identity.
    Probabilities are clamped at the smallest positive normal number before the log, so a
    probability of exactly 0 gives a large finite loss rather than ``inf``. For numerical
    stability, prefer returning logits.

    The target ``q`` is either class indices (an integer tensor of the input's shape without
    the class dim) or a distribution over the classes (a float tensor of the input's shape).
    Values are checked, one reduction each: class indices in ``[0, classes)`` (or
    ``ignore_index``), distributions in [0, 1] summing to 1, probability inputs in [0, 1]; a
    bad value is a ValueError naming ``input`` or ``target`` (at once on the CPU; on an
    accelerator at the log period, so the device is not stalled every step).

    Args:
        input: What the input holds: ``"logits"``, ``"probabilities"`` or
            ``"log_probabilities"``.
        target: ``"index"``, ``"probabilities"``, or ``"auto"`` (integer dtype -> index,
            floating dtype -> probabilities).
        class_dim: The dimension of the input that indexes the classes (1 in torch's
            convention; -1 for a ``(batch, time, classes)`` output of ``nn.Linear``).
        label_smoothing: In [0, 1), as in ``F.cross_entropy``.
        class_weight: Optional 1-D tensor of per-class weights (a buffer: it follows
            ``.to(device)``).
        ignore_index: Index targets equal to this are ignored (index targets only).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import math, torch
        >>> probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
        >>> loss = CrossEntropy(input="probabilities")
        >>> round(float(loss(probs, torch.tensor([1, 0]))), 6)
        0.490415
        >>> round((-math.log(0.75) - math.log(0.5)) / 2, 6)
        0.490415
    """

    name: ClassVar[str] = "cross_entropy"
    class_weight: Tensor | None

    def __init__(
        self,
        *,
        input: str = "logits",
        target: str = "auto",
        class_dim: int = 1,
        label_smoothing: float = 0.0,
        class_weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        self.input = check_choice(input, "`input` of CrossEntropy", _INPUTS)
        self.target = check_choice(target, "`target` of CrossEntropy", _TARGETS)
        self.class_dim = check_int(class_dim, "`class_dim` of CrossEntropy")
        self.label_smoothing = check_finite_float(
            label_smoothing, "`label_smoothing` of CrossEntropy", min_value=0.0
        )
        if self.label_smoothing >= 1.0:
            raise ValueError(
                f"`label_smoothing` of CrossEntropy must be in [0, 1); got {self.label_smoothing}"
            )
        self.ignore_index = check_int(ignore_index, "`ignore_index` of CrossEntropy")
        if class_weight is not None and (
            not isinstance(class_weight, Tensor)
            or class_weight.dim() != 1
            or not class_weight.is_floating_point()
        ):
            raise TypeError(
                "`class_weight` of CrossEntropy must be a 1-D floating-point tensor; got "
                f"{describe(class_weight)}"
            )
        self.register_buffer("class_weight", class_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = self._check_input(input, target)
        dim = self._class_dim(input, target, self.class_dim)
        kind = self.target
        if kind == "auto":
            floating = isinstance(target, Tensor) and target.is_floating_point()
            kind = "probabilities" if floating else "index"
        self._check_class_weight(self.class_weight, input, dim)
        if kind == "index":
            target = self._index_target(input, target, dim)
            self._check_indices(input, target, dim, self.ignore_index)
        else:
            target = self._check_target_tensor(input, target)
            if target.shape != input.shape or not target.is_floating_point():
                raise self._mismatch(
                    input,
                    target,
                    "probability targets must be a floating-point tensor of the input's shape "
                    f"{tuple(input.shape)}",
                )
            target = target.to(input.dtype)
            self._check_distribution(target, dim)
        if self.input == "probabilities":
            self._check_unit_interval(
                input, "input", "probabilities", "pass input='logits' for raw scores"
            )
        # F.cross_entropy reads classes from dim 1 (dim 0 for one unbatched sample).
        canonical = 1 if input.dim() >= 2 else 0
        scores = input
        if self.input == "probabilities":
            scores = input.clamp_min(torch.finfo(input.dtype).tiny).log()
        if dim != canonical:
            scores = scores.movedim(dim, canonical)
            if target.is_floating_point():
                target = target.movedim(dim, canonical)
        return F.cross_entropy(
            scores,
            target,
            weight=self.class_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def _check_distribution(self, target: Tensor, dim: int) -> None:
        """Probability targets: entries in [0, 1], each summing to 1 over the classes, or to 0
        (an all-zero row is how padding positions are masked; it contributes nothing)."""
        self._check_unit_interval(target, "target", "class probabilities")
        # Rounding of a float16 softmax leaves sums a few 1e-3 away from 1.
        tolerance = 1e-2 if torch.finfo(target.dtype).bits <= 16 else 1e-3
        sums = target.sum(dim)
        check_values_in(
            sums.masked_fill(sums < tolerance, 1.0),  # masked rows pass
            lambda: f"`target` of {self!r}",
            low=1.0 - tolerance,
            high=1.0 + tolerance,
            expected=f"hold distributions summing to 1 (or all zeros, masked) along the class "
            f"dim {dim} (use target='index' for class indices)",
            key=(id(self), "target sums"),
        )

    def extra_repr(self) -> str:
        return join_repr(
            f"input={self.input!r}",
            f"target={self.target!r}" if self.target != "auto" else "",
            f"class_dim={self.class_dim}" if self.class_dim != 1 else "",
            f"label_smoothing={self.label_smoothing!r}" if self.label_smoothing else "",
            "class_weight=<tensor>" if self.class_weight is not None else "",
            f"ignore_index={self.ignore_index}" if self.ignore_index != -100 else "",
            super().extra_repr(),
        )
