"""``GradientReversal``: identity forward, ``-scale * grad`` backward (Ganin & Lempitsky 2015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_int
from multiloss.collect import current_book
from multiloss.schedules import Constant, Schedule, as_schedule

__all__ = ["GradientReversal"]


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (scale,) = ctx.saved_tensors
        # A 0-dim CPU scale multiplies a tensor on any device without a copy, in its dtype.
        return grad * -scale, None


class GradientReversal(nn.Module):
    """Pass features through unchanged; flip (and scale) the gradient coming back.

    Put it between a feature extractor and an adversary (a domain classifier, a nuisance
    predictor): the adversary learns to predict, and the features learn to make it fail, in one
    backward pass of the *sum* of the losses. This is how domain-adversarial training (DANN)
    maximizes the adversary's loss with respect to the features.

    ``scale`` may be a schedule of the step. DANN's warm start is
    ``multiloss.schedules.SigmoidRamp(steps)`` (``2 / (1 + exp(-10 p)) - 1``, from 0 to 1): the
    adversary's gradient is kept away from the features while it is still noise. The step is
    ``layer.step`` if you set it, else the step of the open loss collector (the trainer's, or
    ``multiloss.collect(step=...)``); a schedule with neither is an error rather than a silent
    scale of ``schedule(0)``.

    Args:
        scale: A non-negative float, a ``Schedule``, or a callable of the step.

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> GradientReversal(0.5)(x).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
        >>> from multiloss.schedules import SigmoidRamp
        >>> layer = GradientReversal(SigmoidRamp(1000))
        >>> layer.step = 0
        >>> layer.current_scale()
        0.0
    """

    def __init__(self, scale: float | Schedule | Callable[[int], float] = 1.0) -> None:
        super().__init__()
        self.scale = as_schedule(scale, "`scale` of GradientReversal")
        if isinstance(self.scale, Constant) and self.scale.value_ < 0:
            raise ValueError(
                f"`scale` of GradientReversal must be >= 0 (the reversal is the minus sign); "
                f"got {self.scale.value_}"
            )
        self._step: int | None = None

    @property
    def step(self) -> int | None:
        """The step the schedule is read at (None: the open collector's step)."""
        return self._step

    @step.setter
    def step(self, value: int | None) -> None:
        if value is not None:
            value = check_int(value, "`step` of GradientReversal", min_value=0)
        self._step = value

    def current_scale(self) -> float:
        """The scale at the current step (see the class docstring for where the step comes from)."""
        if isinstance(self.scale, Constant):
            return self.scale.value_
        step = self._step
        if step is None:
            book = current_book()
            if book is None:
                raise RuntimeError(
                    f"GradientReversal's scale {self.scale!r} depends on the step, but no step "
                    "is known: set `layer.step`, or run the forward inside "
                    "multiloss.collect(step=...) (the trainer does)"
                )
            step = book.step
        value = self.scale(step)
        if value < 0:
            raise ValueError(
                f"the scale schedule of GradientReversal must stay >= 0; got {value} at step {step}"
            )
        return value

    # Reads a ContextVar, which compiled code cannot; a tensor result (not a float, which Dynamo
    # would bake in as a constant) keeps one compiled graph valid while the scale ramps.
    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def _scale_tensor(self) -> Tensor:
        return torch.tensor(self.current_scale(), dtype=torch.float32)

    def forward(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return x  # inference: nothing to reverse, nothing to compute
        return _Reverse.apply(x, self._scale_tensor())  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}"
