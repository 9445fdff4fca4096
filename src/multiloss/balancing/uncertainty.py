"""``Uncertainty``: learned homoscedastic-uncertainty weights (Kendall, Gal & Cipolla, 2018)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_finite_float
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["Uncertainty"]


def _bounds(value: float | Mapping[str, float], what: str) -> float | dict[str, float]:
    if isinstance(value, Mapping):
        return {k: check_finite_float(v, f"{what}[{k!r}]") for k, v in value.items()}
    return check_finite_float(value, what)


class Uncertainty(LossWeighting):
    """Weigh each loss by a learned precision, as in Kendall et al. 2018, eq. (7).

    With ``s_i = log sigma_i^2`` a learnable parameter per loss, the objective is

    * regression losses: ``0.5 * exp(-s_i) * L_i + 0.5 * s_i`` (a Gaussian likelihood),
    * classification losses (``classification=``): ``exp(-s_i) * L_i + 0.5 * s_i``,

    so the model gets the weights ``0.5 * exp(-s_i)`` (or ``exp(-s_i)``) and ``s_i`` settles
    where ``exp(s_i)`` tracks the loss: at the optimum the weight is ``0.5 / L_i`` for both forms
    (``log sigma`` is ``s/2``). The regression form for every loss is the convention of the
    reference re-implementations (Nash-MTL's and FAMO's ``uw``, LibMTL); ``s_i`` starts at 0.

    **Guard for losses that can be negative.** The objective is unbounded below in ``s_i`` when
    ``L_i <= 0`` (``s_i -> -inf``: an ever larger weight on a loss that is already negative). So
    ``L_i`` is measured from ``lower_bound`` (default 0): the log-variance term uses
    ``L_i - lower_bound_i``, and a loss below its bound stops training with an error naming it.
    A Gaussian NLL, a log-likelihood or an ELBO can go negative: give their bound explicitly,
    e.g. ``lower_bound={"nll": -10.0}``. The model's gradient is unchanged by the bound.

    A maximized loss (negative fixed weight ``w``) is ascended with weight ``w * 0.5 *
    exp(-s_i)``; its ``s_i`` is fitted to the loss itself (the log-variance term uses ``|w|``).

    The log-variances are parameters: an optimizer must step them. The trainer adds
    ``parameter_group()``; standalone, add it yourself (``optimizer.add_param_group``).

    Args:
        classification: Names of losses that use the classification form.
        init: Initial ``s_i`` (0: weight 0.5 for regression losses).
        lower_bound: A float, or loss name -> float (others: 0): the smallest value each loss
            can take.
        lr: Learning rate of the log-variances in ``parameter_group()`` (None: the
            optimizer's; Nash-MTL's benchmark code uses 0.025 with Adam).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> balancer = Uncertainty(classification=["cls"])
        >>> balancer.backward({"reg": 4 * w, "cls": 2 * w})
        {'cls': 1.0, 'reg': 0.5}
        >>> balancer.log_vars.grad  # d/ds (c * exp(-s) * L + s / 2) = -c * L + 0.5 at s = 0
        tensor([-1.5000, -1.5000])
    """

    per_loss_state = True
    requires_positive_losses = True

    def __init__(
        self,
        *,
        classification: Iterable[str] = (),
        init: float = 0.0,
        lower_bound: float | Mapping[str, float] = 0.0,
        lr: float | None = None,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(balance=balance)
        self.classification = tuple(sorted(set(classification)))
        self.init = check_finite_float(init, "`init` of Uncertainty")
        self.lower_bound = _bounds(lower_bound, "`lower_bound` of Uncertainty")
        if lr is not None:
            self.parameter_lr = check_finite_float(
                lr, "`lr` of Uncertainty", min_value=0.0, strict_min=True
            )
        self.log_vars: nn.Parameter
        self._coefficients: Tensor
        self._bounds: Tensor
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        unknown = sorted(set(self.classification) - set(names))
        if unknown:
            raise ValueError(
                f"`classification` of Uncertainty names {unknown} but the balanced losses are "
                f"{list(names)}"
            )
        self.log_vars = nn.Parameter(torch.full((len(names),), self.init, device=device))
        classification = [1.0 if name in self.classification else 0.5 for name in names]
        bounds = [
            self.lower_bound.get(name, 0.0)
            if isinstance(self.lower_bound, dict)
            else self.lower_bound
            for name in names
        ]
        self.register_buffer("_coefficients", torch.tensor(classification, device=device), False)
        self.register_buffer("_bounds", torch.tensor(bounds, device=device), persistent=False)

    def factors(self, ctx: BalanceContext) -> Tensor:
        self.require_at_least(ctx, self._bounds, "the log-variance term needs L >= its bound")
        return self._coefficients * torch.exp(-self.log_vars.detach())

    def extra_loss(self, ctx: BalanceContext) -> Tensor:
        excess = (ctx.values - self._bounds).clamp_min(0.0)
        terms = self._coefficients * torch.exp(-self.log_vars) * excess + 0.5 * self.log_vars
        return (terms * ctx.weights.abs()).sum()

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        if self._names is None:
            return {}
        return {f"log_var/{name}": self.log_vars[i] for i, name in enumerate(self._names)}

    def hyperparameters(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.classification:
            fields["classification"] = list(self.classification)
        if self.init != 0.0:
            fields["init"] = self.init
        if self.lower_bound != 0.0:
            fields["lower_bound"] = self.lower_bound
        if self.parameter_lr is not None:
            fields["lr"] = self.parameter_lr
        return fields
