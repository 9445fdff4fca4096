"""The base class of the built-in losses and the checks they share.

Every built-in loss validates its input and target before handing them to
``torch.nn.functional``: shapes are compared exactly (no silent broadcasting, the classic
``(N, 1)`` against ``(N,)`` bug of ``mse_loss``), and a mismatch raises
:class:`TargetMismatchError` naming the loss, both shapes and both dtypes. The checks read only
shapes and dtypes, so they never synchronize the device with the host.

Checks on values (probabilities in [0, 1], class indices below the number of classes) cost one
reduction each: on the CPU they raise at once; on an accelerator they are deferred and read at
the log period (see ``multiloss._validation.check_values_in``); under ``torch.compile`` they are
skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from multiloss._validation import (
    check_choice,
    check_class_indices,
    check_values_in,
    describe,
)

__all__ = ["REDUCTIONS", "Loss", "TargetMismatchError", "describe_tensor"]

#: The reductions every built-in loss accepts.
REDUCTIONS = ("mean", "sum", "none")


class TargetMismatchError(ValueError):
    """A target whose shape or dtype cannot fit a loss (the message names both and the loss)."""


def describe_tensor(value: Any) -> str:
    """``shape (8, 3) float32`` for a tensor; ``describe(value)`` for anything else."""
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return describe(value)


class Loss(nn.Module):
    """Base class of the built-in losses: ``forward(input, target) -> Tensor``.

    Subclasses set :attr:`name` (used to name the loss in ``explain`` and in sub-loss names)
    and call the checks below, so every bad target gets the same kind of message.
    ``multiloss.Automatic`` treats an output produced by a ``Loss`` inside a model as a loss
    already, like ``torch.nn``'s own loss modules.

    Example:
        >>> import torch
        >>> class Hinge(Loss):
        ...     name = "hinge"
        ...     def forward(self, input, target):
        ...         target = self._aligned_target(input, target)
        ...         return torch.relu(1 - input * target).mean()
        >>> float(Hinge()(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0])))
        0.25
    """

    #: Short snake_case name of the loss.
    name: ClassVar[str] = "loss"

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice(
            reduction, f"`reduction` of {type(self).__name__}", REDUCTIONS
        )

    # -- checks shared by the subclasses -------------------------------------------------------
    def _mismatch(self, input: Any, target: Any, expected: str) -> TargetMismatchError:
        return TargetMismatchError(
            f"the target does not fit {self!r}: input {describe_tensor(input)}, target "
            f"{describe_tensor(target)}; {expected}"
        )

    def _check_input(
        self, input: Any, target: Any, what: str = "a floating-point tensor"
    ) -> Tensor:
        if not isinstance(input, Tensor) or not input.is_floating_point():
            raise self._mismatch(input, target, f"the input must be {what}")
        return input

    def _check_target_tensor(self, input: Tensor, target: Any) -> Tensor:
        if not isinstance(target, Tensor):
            raise self._mismatch(input, target, "the target must be a tensor")
        if target.is_complex():
            raise self._mismatch(input, target, "the target must be real-valued")
        return target

    def _aligned_target(self, input: Tensor, target: Any) -> Tensor:
        """The target with the input's shape and dtype.

        Equal shapes pass; shapes that differ only by a trailing dimension of size 1 (an
        ``(N, 1)`` head against ``(N,)`` labels, or the reverse) are reshaped, since that is
        unambiguous. Anything else raises instead of broadcasting.
        """
        aligned = self._check_target_tensor(input, target)
        if aligned.shape != input.shape:
            if not _differ_by_trailing_one(input.shape, aligned.shape):
                raise self._mismatch(
                    input,
                    aligned,
                    f"{self.name} needs a target of the input's shape {tuple(input.shape)}",
                )
            aligned = aligned.reshape(input.shape)
        if aligned.dtype != input.dtype:
            aligned = aligned.to(input.dtype)
        return aligned

    def _class_dim(self, input: Tensor, target: Any, class_dim: int) -> int:
        """``class_dim`` as a non-negative index into ``input``'s dims, or raise."""
        if input.dim() == 0:
            raise self._mismatch(input, target, "the input needs a class dimension")
        if not -input.dim() <= class_dim < input.dim():
            raise self._mismatch(
                input,
                target,
                f"`class_dim` {class_dim} is out of range for a {input.dim()}-D input",
            )
        return class_dim % input.dim()

    def _index_target(self, input: Tensor, target: Any, dim: int) -> Tensor:
        """Class indices: an integer tensor of the input's shape without the class dim."""
        indices = self._check_target_tensor(input, target)
        expected = input.shape[:dim] + input.shape[dim + 1 :]
        if indices.is_floating_point() or indices.dtype == torch.bool:
            hint = " (convert with target.long())" if indices.shape == expected else ""
            raise self._mismatch(
                input, indices, f"class-index targets must be an integer tensor{hint}"
            )
        if indices.shape != expected:
            raise self._mismatch(
                input,
                indices,
                f"class-index targets must have the input's shape without the class dim "
                f"{dim}, {tuple(expected)}",
            )
        return indices.long()

    def _check_unit_interval(self, value: Tensor, role: str, meaning: str, hint: str = "") -> None:
        """Raise ValueError naming ``role`` (``input``/``target``) if a value is outside
        [0, 1]; ``meaning`` says what the values are (``"probabilities"``), ``hint`` how to
        fix a likely mistake. The message is built only on a failure."""
        check_values_in(
            value,
            lambda: f"`{role}` of {self!r}",
            low=0.0,
            high=1.0,
            expected=f"hold {meaning} in [0, 1]" + (f" ({hint})" if hint else ""),
            key=(id(self), role, meaning),
        )

    def _check_indices(self, input: Tensor, indices: Tensor, dim: int, ignore_index: int) -> None:
        """Raise ValueError naming ``target``, the number of classes and the bad indices."""
        check_class_indices(
            indices,
            input.shape[dim],
            lambda: f"`target` of {self!r} (input {describe_tensor(input)}, class dim {dim})",
            ignore_index=ignore_index,
            key=(id(self), "target", input.shape[dim]),
        )

    def _check_class_weight(self, weight: Tensor | None, input: Tensor, dim: int) -> None:
        """``class_weight`` must have one entry per class of ``input``."""
        if weight is not None and weight.shape[0] != input.shape[dim]:
            raise ValueError(
                f"`class_weight` of {type(self).__name__} must have one entry per class; got "
                f"{weight.shape[0]} entries for an input {describe_tensor(input)} with "
                f"{input.shape[dim]} classes along dim {dim}"
            )

    def _reduce(self, values: Tensor) -> Tensor:
        if self.reduction == "mean":
            return values.mean()
        if self.reduction == "sum":
            return values.sum()
        return values

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


def _differ_by_trailing_one(a: torch.Size, b: torch.Size) -> bool:
    if len(a) == len(b) + 1:
        return a[-1] == 1 and a[:-1] == b
    if len(b) == len(a) + 1:
        return b[-1] == 1 and b[:-1] == a
    return False


def join_repr(*parts: str) -> str:
    """Join the non-empty parts of an ``extra_repr``."""
    return ", ".join(part for part in parts if part)
