"""MGDA (Sener & Koltun, 2018): the minimum-norm point of the convex hull of the gradients.

Reference: O. Sener and V. Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018; official code: github.com/isl-org/MultiObjectiveOptimization
(``multi_task/train_multi_task.py``, ``min_norm_solvers.py``).

The weights ``w`` on the simplex minimize ``||sum_i w_i g_i / n_i||`` (Frank-Wolfe, see
``_minnorm.py``), where ``n_i`` is the optional gradient normalizer of the official code
(``gradient_normalizers``): ``"none"`` (1, the paper's MGDA), ``"l2"`` (``||g_i||``), ``"loss"``
(the loss value) or ``"loss+"`` (loss value times ``||g_i||``). As in the official training
script the weights are then applied to the raw losses: the update is ``sum_i w_i g_i``.
MGDA-UB (the paper's upper bound, Section 3.3) is the same computation on the gradients with
respect to the shared representation instead of the shared parameters.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from multiloss._validation import check_choice, check_finite_float, check_int
from multiloss.balancing._linalg import check_gram
from multiloss.balancing._minnorm import min_norm_exact, min_norm_weights
from multiloss.balancing._plan import Level
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.gradient import GradientBalancer

__all__ = ["MGDA", "NORMALIZATIONS", "SOLVERS", "mgda_weights"]

#: ``normalization`` options, named as in the official code.
NORMALIZATIONS = ("none", "l2", "loss", "loss+")
#: ``solver`` options: the paper's Frank-Wolfe (default), or the exact active-set solver.
SOLVERS = ("frank-wolfe", "exact")


def mgda_weights(
    gram: Tensor,
    losses: Tensor | None = None,
    *,
    normalization: str = "none",
    solver: str = "frank-wolfe",
    max_iter: int = 250,
    tol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Per-loss weights of MGDA (on the simplex) and the Frank-Wolfe iterations used.

    Args:
        gram: ``G = J J^T``, shape (T, T).
        losses: Loss values (T,), needed by the ``"loss"`` and ``"loss+"`` normalizations,
            which assume positive losses (non-positive ones give non-finite weights).
        normalization: One of :data:`NORMALIZATIONS`.
        solver: One of :data:`SOLVERS`.
        max_iter: Frank-Wolfe iteration budget (official 250).
        tol: Frank-Wolfe stopping threshold on the L1 change of the weights (official 1e-5).

    Example:
        >>> import torch
        >>> g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> w, _ = mgda_weights(g @ g.T)
        >>> w  # the point of the segment closest to 0 leans towards the smaller gradient
        tensor([0.2000, 0.8000])
    """
    check_gram(gram, "MGDA")

    def solve(matrix: Tensor) -> tuple[Tensor, Tensor]:
        if solver == "exact":
            return min_norm_exact(matrix)
        return min_norm_weights(matrix, max_iter=max_iter, tol=tol)

    if normalization == "none":
        return solve(gram)
    norms = gram.diagonal().clamp(min=0).sqrt()
    if normalization == "l2":
        # A zero gradient stays zero whatever it is divided by.
        scale = torch.where(norms > 0, norms, torch.ones_like(norms))
    else:
        if losses is None:
            raise ValueError(f"`losses` are needed by MGDA's normalization {normalization!r}")
        values = losses.detach().to(gram)
        scale = values * norms if normalization == "loss+" else values
        # A non-positive loss has no meaningful normalizer: poison the weights (caught as
        # non-finite by the caller) rather than read the value on the host.
        scale = torch.where(values > 0, scale, torch.nan)
        scale = torch.where((scale == 0) & (values > 0), torch.ones_like(scale), scale)
    normalized = gram / (scale[:, None] * scale[None, :])
    weights, iterations = solve(torch.nan_to_num(normalized))
    return torch.where(torch.isfinite(scale).all(), weights, torch.nan), iterations


class MGDA(GradientBalancer):
    """MGDA: the minimum-norm convex combination of the loss gradients (a common descent
    direction for every loss, or zero at a Pareto-stationary point).

    The reported weights are on the simplex (they sum to 1, as in the paper and the official
    code), so when the gradients agree the update is about ``1/T`` of Sum's. With
    ``level="representation"`` this is the paper's MGDA-UB: the weights come from the gradients
    with respect to the shared representation (one cheap backward pass to it), and the trunk's
    update is the backward pass of the re-weighted losses from there. The heads get their
    ordinary gradients, as in the paper's Algorithm 2 (the official code backpropagates the
    re-weighted losses through them too: see ``GradientBalancer``'s ``head_weights``).

    Args:
        normalization: Gradient normalizer before solving (official ``gradient_normalizers``):
            ``"none"`` (default, the paper's MGDA), ``"l2"``, ``"loss"`` or ``"loss+"``. The
            last two divide by the loss value and so need positive losses.
        solver: ``"frank-wolfe"`` (the paper's Algorithm 2 with the official stopping rule;
            default) or ``"exact"`` (active set: exact, and much faster when the gradients are
            nearly orthogonal, where Frank-Wolfe uses its whole budget).
        max_iter: Frank-Wolfe iteration budget (official 250); the iterations used are in the
            diagnostics as ``balance/mgda/iterations``.
        tol: Frank-Wolfe stopping threshold on the L1 change of the weights (official 1e-5).
        level: ``"parameters"`` (MGDA) or ``"representation"`` (MGDA-UB).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = {"a": w @ torch.tensor([2.0, 0.0]), "b": w @ torch.tensor([0.0, 1.0])}
        >>> weights = MGDA().backward(losses)
        >>> {name: round(value, 4) for name, value in weights.items()}
        {'a': 0.2, 'b': 0.8}
        >>> w.grad  # the point of the segment [g_a, g_b] closest to the origin
        tensor([0.4000, 0.8000])
    """

    def __init__(
        self,
        *,
        normalization: str = "none",
        solver: str = "frank-wolfe",
        max_iter: int = 250,
        tol: float = 1e-5,
        level: Level = "parameters",
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(level=level, balance=balance)
        self.normalization = check_choice(normalization, "`normalization` of MGDA", NORMALIZATIONS)
        self.solver = check_choice(solver, "`solver` of MGDA", SOLVERS)
        self.max_iter = check_int(max_iter, "`max_iter` of MGDA", min_value=0)
        self.tol = check_finite_float(tol, "`tol` of MGDA", min_value=0.0, strict_min=True)
        self._iterations: Tensor | None = None

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        values = None
        if self.normalization in ("loss", "loss+"):
            values = ctx.values
            self.require_at_least(
                ctx,
                0.0,
                f"MGDA's {self.normalization!r} normalization divides by the loss",
                "Use `normalization='l2'` or 'none' (they do not divide by the loss), shift the "
                "loss by a constant so it stays above 0, or leave it out of `balance=`",
                strict=True,  # a loss of 0 would be divided by
            )
        weights, self._iterations = mgda_weights(
            gramian,
            values,
            normalization=self.normalization,
            solver=self.solver,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        return weights

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        return {} if self._iterations is None else {"iterations": self._iterations}

    def hyperparameters(self) -> dict[str, object]:
        fields: dict[str, object] = {"normalization": self.normalization}
        if self.solver != "frank-wolfe":
            fields["solver"] = self.solver
        if self.max_iter != 250:
            fields["max_iter"] = self.max_iter
        if self.tol != 1e-5:
            fields["tol"] = self.tol
        return {**fields, **super().hyperparameters()}
