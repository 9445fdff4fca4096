"""``GradientBalancer``: methods that combine per-loss gradients on the shared tensors.

The base class does all the plumbing: it finds the shared parameters, computes the per-loss
gradients over them (one batched backward pass; a loop on the CPU; or over the marked
representation), hands the method a :class:`~multiloss.balancing.Jacobian`, writes the
method's update into ``.grad`` of the shared tensors (added, times ``scale``), and gives every
other parameter the ordinary gradient of the weighted sum. A method only does the linear
algebra.

What a method sees: the rows of the Jacobian are the gradients of the *objectives*
``o_i = ctx.weights[i] * ctx.losses[i]``: the fixed weight is already in (a maximized loss has
a negated gradient, so "descend every objective" is always right), as is any wrapper's rescaling
(``Normalize(PCGrad())`` gives PCGrad the gradients of the normalized losses). Rows may be zero
(a loss with weight 0 this step); a method must stay finite then.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

import torch
from torch import Tensor

from multiloss._validation import check_choice
from multiloss.balancing._jacobian import Jacobian
from multiloss.balancing._plan import Level, Plan
from multiloss.balancing.base import Balancer
from multiloss.balancing.context import BalanceContext

__all__ = ["GradientBalancer"]


class GradientBalancer(Balancer):
    """Base class of gradient-level methods: implement :meth:`weigh` or :meth:`combine`.

    * ``weigh(gramian, ctx) -> (T,)``: most methods (MGDA, CAGrad, PCGrad, IMTL-G, Nash-MTL,
      Aligned-MTL, UPGrad) only need the ``T x T`` Gramian ``G = J J^T`` of the objectives'
      gradients and return coefficients ``a`` such that the shared update is
      ``sum_i a_i * grad o_i``. Cheapest, exact diagnostics, composes with every wrapper.
    * ``combine(jacobian, ctx)``: for methods that need the gradients themselves. Return
      coefficients as above, or an explicit update: one tensor per shared tensor (the
      ``jacobian.blocks`` order, each shaped like the tensor).

    The returned coefficients are used for the shared tensors only. Task-specific parameters get
    ``sum_i weights_i * grad losses_i`` (``head_weights = "fixed"``, every method here, as
    LibMTL and torchjd do and MGDA's paper has it) or ``sum_i a_i * grad o_i``
    (``head_weights = "method"``, a class attribute: what Nash-MTL's and MGDA's official code
    do, backpropagating the re-weighted loss through the heads too; subclass to get it).

    With a single balanced loss there is nothing to balance: the method is not called and the
    update is the plain gradient (Sum).

    Args:
        level: ``"parameters"`` (exact: per-loss gradients over the shared parameters) or
            ``"representation"`` (per-loss gradients with respect to the tensor marked with
            ``multiloss.mark_representation``, e.g. MGDA-UB; much cheaper).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> class EqualNorms(GradientBalancer):  # every gradient scaled to unit norm
        ...     def weigh(self, gramian, ctx):
        ...         return 1.0 / gramian.diagonal().sqrt()
        >>> trunk = torch.nn.Linear(2, 1, bias=False)
        >>> h = trunk(torch.ones(1, 2))
        >>> weights = EqualNorms().backward({"a": 3 * h.sum(), "b": h.sum()})
        >>> {name: round(value, 4) for name, value in weights.items()}  # 1/(3 sqrt 2), 1/sqrt 2
        {'a': 0.2357, 'b': 0.7071}
        >>> trunk.weight.grad  # (3/3 + 1/1) * sqrt(2)/2 per coordinate: sqrt(2)
        tensor([[1.4142, 1.4142]])
    """

    #: How task-specific parameters are weighted: ``"fixed"`` or ``"method"`` (see above).
    head_weights: ClassVar[Literal["fixed", "method"]] = "fixed"

    def __init__(
        self, *, level: Level = "parameters", balance: str | Iterable[str] | None = None
    ) -> None:
        super().__init__(balance=balance)
        self.level: Level = check_choice(
            level, f"`level` of {type(self).__name__}", ("parameters", "representation")
        )

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        """``(T,)`` coefficients of the objectives' gradients, from their Gramian ``(T, T)``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement weigh(gramian, ctx) or combine(jacobian, ctx)"
        )

    def combine(self, jacobian: Jacobian, ctx: BalanceContext) -> Tensor | list[Tensor]:
        """Coefficients ``(T,)``, or an explicit update (one tensor per Jacobian block)."""
        return self.weigh(jacobian.gramian(), ctx)

    def plan(self, ctx: BalanceContext) -> Plan:
        if ctx.num_losses == 1:
            return ctx.sum_plan()
        result = self.combine(ctx.jacobian(self.level), ctx)
        if isinstance(result, Tensor):
            coefficients = result.detach().to(torch.float32) * ctx.weights
            heads = coefficients if self.head_weights == "method" else ctx.weights
            return Plan(loss_weights=heads, shared_update=coefficients, level=self.level)
        return Plan(
            loss_weights=ctx.weights,
            shared_update=[part.detach() for part in result],
            level=self.level,
            reported=ctx.weights,
        )

    def hyperparameters(self) -> dict[str, object]:
        return {"level": self.level} if self.level != "parameters" else {}

    def _weighs_only(self) -> bool:
        # A method that only weighs the Gramian sees nothing after its Jacobian but execute();
        # one that overrides combine() or plan() may ask for more (ctx.jacobian_of).
        cls = type(self)
        return cls.combine is GradientBalancer.combine and cls.plan is GradientBalancer.plan

    def _needs_graph_after_jacobian(self) -> bool:
        return not (self.level == "parameters" and self._weighs_only())

    def _heads_at_representation(self) -> bool:
        return self.level == "representation" and self._weighs_only()
