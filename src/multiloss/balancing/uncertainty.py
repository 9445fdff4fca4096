"""``Uncertainty``: learned homoscedastic-uncertainty weights (Kendall, Gal & Cipolla, 2018)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_finite_float, describe
from multiloss.balancing._arrays import add_to_grad, float32_tensor, floats_on_host
from multiloss.balancing._checks import bounds_per_loss
from multiloss.balancing._plan import Extra
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["Uncertainty"]


def _bounds(value: float | Mapping[str, float]) -> float | dict[str, float]:
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(
                    "`lower_bound` of Uncertainty, given as a mapping, must map loss names "
                    f"(strings) to floats; got the key {describe(key)}"
                )
        return {
            k: check_finite_float(v, f"`lower_bound[{k!r}]` of Uncertainty")
            for k, v in value.items()
        }
    return check_finite_float(value, "`lower_bound` of Uncertainty")


def _names(classification: str | Iterable[str]) -> tuple[str, ...]:
    """``classification=``: one loss name, or an iterable of them (sorted, deduplicated)."""
    if isinstance(classification, str):
        items: list[Any] = [classification]
    elif isinstance(classification, Iterable) and not isinstance(classification, Mapping):
        items = list(classification)
    else:
        raise TypeError(
            "`classification` of Uncertainty must be a loss name or a list of loss names; got "
            f"{describe(classification)}"
        )
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                "`classification` of Uncertainty must hold loss names (strings); got "
                f"{describe(item)} in {describe(classification)}"
            )
    return tuple(sorted(set(items)))


def _exp(x: float) -> float:
    """``exp(x)``, ``inf`` where it overflows (as a tensor's exp; ``math.exp`` raises)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


class Uncertainty(LossWeighting):
    """Weigh each loss by a learned precision, as in Kendall et al. 2018, eq. (7).

    With ``s_i = log sigma_i^2`` a learnable parameter per loss, the objective is

    * regression losses: ``0.5 * exp(-s_i) * L_i + 0.5 * s_i`` (a Gaussian likelihood),
    * classification losses (``classification=``): ``exp(-s_i) * L_i + 0.5 * s_i``,

    so the model gets the weights ``0.5 * exp(-s_i)`` (or ``exp(-s_i)``) and ``s_i`` settles
    where ``exp(s_i)`` tracks the loss: at the optimum the weight is ``0.5 / L_i`` for both forms
    (``log sigma`` is ``s/2``). The authors released no code; the regression form for every
    loss is the convention of the reference re-implementations (Nash-MTL's and FAMO's ``uw``,
    LibMTL), and ``s_i`` starts at 0 as in Nash-MTL's and FAMO's (LibMTL's starts at -0.5).

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
        classification: Names of losses that use the classification form (one name, or a
            list of names).
        init: Initial ``s_i`` (the paper's 0: weight 0.5 for regression losses), or
            ``"first"``: the equilibrium for the first losses seen (``s_i = log(2 c_i L_i)``,
            so every weighted loss starts at 0.5). Not in the paper; use it when losses are
            far from 1: the gradient of ``s_i`` is proportional to ``L_i``, and a loss of
            ``1e6`` at ``s_i = 0`` fills Adam's second-moment estimate for thousands of steps,
            during which ``s_i`` barely moves (see ``docs/balancing.md``).
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
        classification: str | Iterable[str] = (),
        init: float | str = 0.0,
        lower_bound: float | Mapping[str, float] = 0.0,
        lr: float | None = None,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(balance=balance)
        self.classification = _names(classification)
        if isinstance(init, str) and init != "first":
            raise ValueError(f"`init` of Uncertainty must be a float or 'first'; got {init!r}")
        self.init: float | str = (
            init if init == "first" else check_finite_float(init, "`init` of Uncertainty")
        )
        self.lower_bound = _bounds(lower_bound)
        if lr is not None:
            self.parameter_lr = check_finite_float(
                lr, "`lr` of Uncertainty", min_value=0.0, strict_min=True
            )
        self.log_vars: nn.Parameter
        self._coefficients: Tensor
        self._bounds: Tensor
        self.started: Tensor
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        unknown = sorted(set(self.classification) - set(names))
        if unknown:
            raise ValueError(
                f"`classification` of Uncertainty names {unknown} but the balanced losses are "
                f"{list(names)}"
            )
        bounds = bounds_per_loss(self.lower_bound, names, "Uncertainty")
        start = 0.0 if isinstance(self.init, str) else self.init
        self.log_vars = nn.Parameter(torch.full((len(names),), start, device=device))
        self.register_buffer("started", torch.tensor(self.init != "first", device=device))
        classification = [1.0 if name in self.classification else 0.5 for name in names]
        self.register_buffer("_coefficients", torch.tensor(classification, device=device), False)
        self.register_buffer("_bounds", torch.tensor(bounds, device=device), persistent=False)

    def _on_host(self, floats: list[float] | None) -> bool:
        """Whether the weights and the log-variances' gradient can be worked out on Python
        floats (``floats``: the values, read for free on the CPU; the log-variances in
        float32): as tensor operations, with the backward nodes of the log-variance term,
        they cost about 0.2 ms of an 8 ms step (T = 4, 2 cores)."""
        return floats is not None and floats_on_host(self.log_vars)

    def factors(self, ctx: BalanceContext) -> Tensor:
        self.require_at_least(ctx, self._bounds, "the log-variance term needs L >= its bound")
        floats = ctx.value_floats()
        if self._on_host(floats):
            assert floats is not None
            return self._factors_host(floats)
        if self.init == "first":
            with torch.no_grad():  # on the device: no sync to find out whether it is the first
                excess = (ctx.values - self._bounds).clamp_min(1e-12)
                equilibrium = torch.log(excess * self._coefficients * 2.0)
                self.log_vars.copy_(torch.where(self.started, self.log_vars, equilibrium))
                self.started.fill_(True)
        return self._coefficients * torch.exp(-self.log_vars.detach())

    def _factors_host(self, values: list[float]) -> Tensor:
        """:meth:`factors` on Python floats, ``init="first"`` written in place."""
        coefficients = self._coefficients.tolist()
        if self.init == "first" and not bool(self.started):
            equilibrium = [
                math.log(max(value - bound, 1e-12) * c * 2.0)
                for value, bound, c in zip(values, self._bounds.tolist(), coefficients, strict=True)
            ]
            self._host.write("log_vars", self.log_vars, equilibrium)
            self.started.fill_(True)
        weights = [c * _exp(-s) for c, s in zip(coefficients, self.log_vars.tolist(), strict=True)]
        return float32_tensor(weights)

    def extra_loss(self, ctx: BalanceContext) -> Extra:
        floats = ctx.value_floats()
        if self._on_host(floats):
            assert floats is not None
            slopes = self._slopes(ctx, floats)
            if self._writes_gradient_itself(ctx, self.log_vars):
                # The term's gradient in closed form, written after the backward pass: no
                # term to build, no nodes in the pass (measured: 0.1 ms of an 8 ms step).
                factor = float(ctx.gradient_scale)
                return partial(add_to_grad, self.log_vars, [g * factor for g in slopes])
            # A hook watches the log-variances: autograd writes their gradient, from a dot
            # product with the same slopes (the term's value up to a constant).
            return torch.dot(self.log_vars, float32_tensor(slopes))
        excess = (ctx.values - self._bounds).clamp_min(0.0)
        terms = self._coefficients * torch.exp(-self.log_vars) * excess + 0.5 * self.log_vars
        return (terms * ctx.weights.abs()).sum()

    def _slopes(self, ctx: BalanceContext, values: list[float]) -> list[float]:
        """The log-variance term's gradient ``g_i = |w_i| (0.5 - c_i exp(-s_i) (L_i - b_i))``
        (what autograd gets from :meth:`extra_loss`'s formula), on floats."""
        return [
            abs(weight) * (0.5 - c * _exp(-s) * max(loss - bound, 0.0))
            for s, c, loss, bound, weight in zip(
                self.log_vars.tolist(),
                self._coefficients.tolist(),
                values,
                self._bounds.tolist(),
                ctx.weights.tolist(),
                strict=True,
            )
        ]

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
