"""CAGrad (Liu et al., 2021): conflict-averse gradient descent.

Reference: B. Liu, X. Liu, X. Jin, P. Stone and Q. Liu, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021; official code: github.com/Cranial-XIX/CAGrad
(``nyuv2/utils.py``, ``cagrad(grads, alpha, rescale=1)``; the same function in the Nash-MTL
repository's ``methods/weight_methods.py`` with ``c = 0.4``).

The update maximizes the worst per-loss improvement within a ball around the mean gradient
``g0``: ``max_d min_i g_i . d  s.t.  ||d - g0|| <= c ||g0||``. Its dual is a problem over the
simplex, ``min_w  g_w . g0 + c ||g0|| ||g_w||`` with ``g_w = J^T w``, and the update is
``d = g0 + (c ||g0|| / ||g_w||) g_w``. As in the official code the result is divided by
``1 + c^2`` (``rescale=1``) and multiplied by T "to match the sum loss", so ``c = 0`` gives Sum.
The official code solves the dual with scipy's SLSQP; here it is solved exactly by an
active-set Newton method on the Gram matrix (``_qp.py``), without any external solver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from multiloss._validation import check_choice, check_finite_float
from multiloss.balancing._arrays import Array, from_host, namespace, to_host
from multiloss.balancing._linalg import (
    check_gram,
    normalize_gram,
    on_host,
    pair_on_host,
    solver_scope,
)
from multiloss.balancing._plan import Level
from multiloss.balancing._qp import minimize_active_set
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.gradient import GradientBalancer

__all__ = ["RESCALE", "CAGrad", "cagrad_solve", "cagrad_weights"]

#: ``rescale`` options: divide the update by ``1 + c^2`` (official default), by ``1 + c``, or not.
RESCALE = ("quadratic", "linear", "none")

# Smoothing inside the square root (the official code adds 1e-8 to an unnormalized Gram
# matrix; ours has trace 1: 1e-12 is a gradient norm of 1e-6 relative, far below the 1e-4 at
# which the correction term is dropped anyway).
_SMOOTH = 1e-12


def cagrad_weights(
    gram: Tensor, c: float = 0.4, rescale: str = "quadratic", start: Tensor | None = None
) -> Tensor:
    """Per-loss weights of CAGrad from the Gram matrix of the loss gradients.

    Args:
        gram: ``G = J J^T``, shape (T, T).
        c: Radius of the ball around the mean gradient, relative to its norm (``c >= 0``).
        rescale: One of :data:`RESCALE`.
        start: Simplex weights to start the solver from (e.g. the previous step's, see
            :func:`cagrad_solve`); only the speed depends on it.

    Returns:
        ``w`` (T,) such that the CAGrad update (times T, as in the official code) is ``J^T w``.

    Example:
        >>> import torch
        >>> g = torch.tensor([[1.0, 0.0], [-0.5, 1.0]])
        >>> w = cagrad_weights(g @ g.T, c=0.0)  # c = 0: plain sum of the gradients
        >>> torch.allclose(w, torch.ones(2))
        True
    """
    return cagrad_solve(gram, c, rescale, start)[0]


def cagrad_solve(
    gram: Tensor, c: float = 0.4, rescale: str = "quadratic", start: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`cagrad_weights` and the simplex weights ``w`` of the dual (a warm start, in the
    solver's precision: float64 on the CPU)."""
    check_gram(gram, "CAGrad")
    host = on_host(gram)  # on the CPU the small solve runs in NumPy (see _linalg.py)
    pair = pair_on_host(gram)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work: Array
        if pair is not None:  # two losses: the same steps on the closed-form minimizer
            a, ab, d = pair
            work = np.array([[a, ab], [ab, d]])
        else:
            work, _ = normalize_gram(gram, host=host)
        xp = namespace(work)
        b = xp.mean(work, axis=1)  # G 1 / T: g_i . g0
        g0_norm = xp.sqrt(xp.clip(xp.mean(work), 0, None))  # ||g0||: ||g0||^2 = 1^T G 1 / T^2
        radius = c * g0_norm
        if c == 0:  # the objective is linear in w and the correction term vanishes
            ones = xp.ones_like(b)
            return from_host(ones, gram), from_host(ones / t, gram)
        if pair is not None:
            w = _solve_pair(pair, float(radius))
        else:
            warm = None if start is None else (to_host(start) if host else start.to(work))
            w = _solve(work, b, radius, warm)
        gw_norm = xp.sqrt(xp.clip(w @ work @ w, 0, None))
        # ||g_w|| ~ 0 (relative to the gradients, which have trace 1 here) means some convex
        # combination of the gradients vanishes: the point is Pareto-stationary, the direction
        # of g_w is undefined, and lambda = radius / ||g_w|| would blow up the weights (their
        # float32 combination would cancel catastrophically). The correction term is dropped
        # (update = the mean gradient). The official code always keeps it (lambda = c /
        # (||g_w|| + 1e-8)); torchjd has a threshold of the same size (norm_eps = 1e-4) below
        # which its weights are all 0 (no update at all).
        usable = gw_norm > 1e-4
        lam = xp.where(usable, radius / xp.where(usable, gw_norm, 1), 0)
        weights = 1.0 + t * lam * w
        divisor = {"quadratic": 1.0 + c * c, "linear": 1.0 + c, "none": 1.0}[rescale]
        # The warm start keeps the solver's precision: rounded to float32, the next step's
        # solve would need one more Newton step (and its line search) to get back.
        dual = torch.from_numpy(w) if isinstance(w, np.ndarray) else w
        return from_host(weights / divisor, gram), dual


def _solve_pair(pair: tuple[float, float, float], radius: float) -> np.ndarray:
    """:func:`_solve` for two losses, in closed form (``pair``: the normalized Gram matrix
    ``[[a, b], [b, d]]``, see :func:`pair_on_host`).

    On the segment ``w = (x, 1 - x)`` the objective is ``L x + radius sqrt(Q(x))`` plus a
    constant, with ``L = (a - d) / 2`` and ``Q(x) = delta x^2 + 2 beta x + gamma`` (``delta =
    a - 2 b + d``, ``beta = b - d``, ``gamma = d`` plus the same smoothing as there). It is
    convex; its derivative vanishes only if ``L^2 < radius^2 delta``, at the root below, else
    the minimum is the end of the segment that ``L``'s sign points to. Clipped to ``[0, 1]``.
    """
    a, b, d = pair
    slope = 0.5 * (a - d)
    delta, beta, gamma = a - 2 * b + d, b - d, d + _SMOOTH
    room = radius * radius * delta - slope * slope
    if delta <= 0:  # equal gradients: every point of the segment is the same update
        x = 0.5 if slope == 0 else float(slope < 0)
    elif room > 0:
        x = (-beta - slope * math.sqrt(max(delta * gamma - beta * beta, 0.0) / room)) / delta
    else:
        x = float(slope < 0)
    x = min(max(x, 0.0), 1.0)
    return np.array([x, 1.0 - x])


def _solve(work: Array, b: Array, radius: Array, warm: Array | None) -> Array:
    """``argmin_{w in simplex}  b . w + radius * sqrt(w^T G w)``.

    From ``warm`` (projected back onto the simplex; its zeros start in the working set) when it
    is usable, else from the uniform weights (the official code's start).
    """
    xp = namespace(work)
    t = work.shape[0]
    uniform = xp.ones_like(b)[None] / t
    start = uniform
    if warm is not None and warm.shape == (t,):
        guess = xp.clip(warm, 0, None)[None]
        total = xp.sum(guess)
        ok = xp.isfinite(total) & (total > 0)
        start = xp.where(ok, guess / xp.where(ok, total, 1), uniform)

    def value(v: Array) -> Array:
        quad = xp.clip(xp.sum((v @ work) * v, axis=-1), 0, None)
        return v @ b + radius * xp.sqrt(quad + _SMOOTH)

    def grad_hess(v: Array) -> tuple[Array, Array]:
        gv = v @ work  # (1, T)
        s = xp.sqrt(xp.clip(xp.sum(gv * v, axis=-1), 0, None) + _SMOOTH)[:, None]  # (1, 1)
        grad = b[None, :] + radius * gv / s
        outer = gv[:, :, None] * gv[:, None, :]
        hess = radius * (work[None] / s[:, :, None] - outer / (s**3)[:, :, None])
        return grad, hess

    w, _ = minimize_active_set(
        grad_hess,
        start,
        xp.zeros_like(start),
        fixed=start <= 0,
        simplex=True,
        value=value,
        max_iter=8 * t + 16,
        tol=1e-9,
    )
    return w[0]


class CAGrad(GradientBalancer):
    """CAGrad: the update that best improves the worst loss near the mean gradient.

    Defaults follow the official code: ``c = 0.4`` and ``rescale="quadratic"`` (divide by
    ``1 + c^2``), and the update is scaled to the sum of the losses (``c = 0`` is exactly Sum).
    The reported per-loss weights are the update's coefficients, ``(1 + T lambda w_i) /
    (1 + c^2)`` with ``lambda = c ||g0|| / ||g_w||``; all positive.

    Args:
        c: Radius of the trust ball around the mean gradient, relative to its norm (>= 0;
            0 gives Sum, larger values lean further towards the worst-served loss).
        rescale: ``"quadratic"`` (divide by ``1 + c^2``, official default), ``"linear"``
            (``1 + c``) or ``"none"``.
        level: ``"parameters"`` (exact) or ``"representation"`` (cheaper).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = {"a": w @ torch.tensor([1.0, 0.0]), "b": w @ torch.tensor([-0.5, 1.0])}
        >>> weights = CAGrad(c=0.4).backward(losses)
        >>> {name: round(value, 3) for name, value in weights.items()}
        {'a': 1.284, 'b': 1.101}
    """

    def __init__(
        self,
        c: float = 0.4,
        *,
        rescale: str = "quadratic",
        level: Level = "parameters",
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(level=level, balance=balance)
        self.c = check_finite_float(c, "`c` of CAGrad", min_value=0.0)
        self.rescale = check_choice(rescale, "`rescale` of CAGrad", RESCALE)
        # The previous step's dual weights: a warm start for the solver (the solution is the
        # same from any start, so this is not saved with the state).
        self._warm: tuple[tuple[str, ...], Tensor] | None = None

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        warm = self._warm[1] if self._warm is not None and self._warm[0] == ctx.names else None
        weights, w = cagrad_solve(gramian, self.c, self.rescale, warm)
        self._warm = (ctx.names, w.detach())
        return weights

    def hyperparameters(self) -> dict[str, object]:
        fields: dict[str, object] = {"c": self.c}
        if self.rescale != "quadratic":
            fields["rescale"] = self.rescale
        return {**fields, **super().hyperparameters()}
