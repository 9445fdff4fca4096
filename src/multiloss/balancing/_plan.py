"""``Plan``: what a balancing method decided for one call, before any gradient is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from torch import Tensor

__all__ = ["Extra", "Level", "Plan"]

#: What a gradient-level method differentiates the losses with respect to: the shared
#: parameters (exact), or the shared representation marked with ``mark_representation``
#: (cheap: the per-loss backward stops at the representation).
Level = Literal["parameters", "representation"]

#: A loss on the balancer's own parameters: a scalar, or a function that builds it after the
#: ordinary backward pass (when it needs what that pass computed, see
#: ``BalanceContext.norms_after_backward``), returning ``None`` for nothing.
Extra: TypeAlias = Tensor | Callable[[], Tensor | None]


@dataclass(frozen=True)
class Plan:
    """How the gradients of one call are built, in the units of the context's losses.

    Every vector has one entry per balanced loss (``ctx.names`` order) and multiplies
    ``ctx.losses[i]``, i.e. it already contains the fixed weight of the loss (its sign included).

    Attributes:
        loss_weights: ``(T,)`` detached weights of the ordinary backward pass of
            ``sum_i loss_weights[i] * ctx.losses[i]`` (plus the fixed losses and ``extra``). It
            reaches every parameter, except the shared ones (or the representation) when
            ``shared_update`` is given. Loss-weighting methods only set this.
        shared_update: What the shared tensors get instead, for gradient-level methods. Either
            ``(T,)`` coefficients ``c`` (the update is ``sum_i c[i] * grad ctx.losses[i]``,
            which keeps diagnostics exact and composes with wrappers), or an explicit update:
            one tensor per shared tensor (``ctx.shared_parameters()`` order, or the
            representation), in absolute gradient units.
        level: What ``shared_update`` refers to.
        extra: A scalar whose gradient reaches only the balancer's own parameters
            (Uncertainty's log-variance term, GradNorm's weight loss); added to the backward.
            Or a function returning that scalar (or ``None``), called after the ordinary
            backward pass and differentiated on its own: for a term built from what that
            pass computed (loss-weighting plans only). A function that returns ``None`` may
            have written its parameters' gradient itself, in closed form, multiplied by
            ``ctx.gradient_scale`` and added to ``.grad`` as autograd would (GradNorm and
            Uncertainty on the CPU).
        reported: ``(T,)`` weights reported to the trainer and the logs (default: the
            coefficients of ``shared_update`` if given, else ``loss_weights``).

    Example:
        >>> import torch
        >>> plan = Plan(loss_weights=torch.tensor([1.0, 2.0]))
        >>> plan.rescaled(torch.tensor([0.5, 0.5])).weights_to_report()
        tensor([0.5000, 1.0000])
    """

    loss_weights: Tensor
    shared_update: Tensor | list[Tensor] | None = None
    level: Level = "parameters"
    extra: Extra | None = None
    reported: Tensor | None = None

    def __post_init__(self) -> None:
        if callable(self.extra) and self.shared_update is not None:
            raise ValueError(
                "`extra` of Plan is a function (a term built after the ordinary backward pass), "
                "which only a loss-weighting plan has; this plan has a `shared_update`"
            )

    def weights_to_report(self) -> Tensor:
        """The ``(T,)`` weights the trainer logs for this call."""
        if self.reported is not None:
            return self.reported
        if isinstance(self.shared_update, Tensor):
            return self.shared_update
        return self.loss_weights

    def rescaled(self, factors: Tensor) -> Plan:
        """The plan for losses ``factors[i]`` times larger (what a wrapper hands back up).

        A wrapper that gave its inner balancer ``r_i * L_i`` turns the inner plan (per unit of
        ``r_i * L_i``) into a plan per unit of ``L_i`` by multiplying every per-loss vector by
        ``r_i``. Explicit updates and ``extra`` are absolute and stay as they are.
        """
        update = self.shared_update
        return replace(
            self,
            loss_weights=self.loss_weights * factors,
            shared_update=update * factors if isinstance(update, Tensor) else update,
            reported=None if self.reported is None else self.reported * factors,
        )
