"""UPGrad (Quinton & Rey, 2024): project each gradient onto the dual cone, then average.

Reference: P. Quinton and V. Rey, "Jacobian Descent for Multi-Objective Optimization",
arXiv:2406.16232 (2024); official code: torchjd ``aggregation/_upgrad.py`` (UPGrad with its
default mean preference vector).

Each loss gradient ``g_i`` is replaced by its Euclidean projection onto the dual cone of all
gradients, ``{x : g_j . x >= 0 for every j}``, and the update is the mean of the projections.
By Proposition 1 of the paper the projection of ``J^T u`` is ``J^T v`` where ``v`` solves the
small quadratic program ``min_v v^T G v  s.t.  v >= u`` on the Gram matrix ``G = J J^T``; with
``u = e_i / T`` for each loss, the update is ``J^T (sum_i v_i)``. The result never conflicts
with any loss (``g_j . update >= 0`` for every ``j``) and equals the mean gradient whenever no
two gradients conflict.

Differences from torchjd: torchjd normalizes the Gram matrix and then adds ``1e-4 * I`` to it
before calling quadprog, which perturbs the projection by about 1e-4 relative; here the QP is
solved exactly (active set, float64, ridge 1e-12 relative) so the non-conflict property holds to
rounding, and nothing is read back to the host on accelerators.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from multiloss.balancing._arrays import Array, eye, from_host, namespace, to_host
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

__all__ = ["UPGrad", "upgrad_solve", "upgrad_weights"]


def upgrad_weights(gram: Tensor, preference: Tensor | None = None) -> Tensor:
    """Per-loss weights of UPGrad from the Gram matrix of the loss gradients.

    Args:
        gram: ``G = J J^T``, shape (T, T), of the per-loss gradients ``J`` (T, P).
        preference: Weights used to combine the projected gradients, shape (T,); default
            ``1/T`` each (the mean, as in the paper and torchjd).

    Returns:
        ``w`` (T,), in the dtype of ``gram``, such that the UPGrad update is ``J^T w``.

    Example:
        >>> import torch
        >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting gradients
        >>> w = upgrad_weights(g @ g.T)
        >>> update = w @ g
        >>> bool((g @ update >= -1e-6).all())  # conflicts with neither
        True
    """
    return upgrad_solve(gram, preference)[0]


def upgrad_solve(
    gram: Tensor, preference: Tensor | None = None, start: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`upgrad_weights` and the (T, T) dual vectors of the projections (a warm start).

    ``start`` (e.g. the previous step's dual vectors) only changes how fast the active-set
    solver gets there: it starts from ``max(start, u)`` with the entries at their bound in the
    working set, instead of from ``u`` with every entry there.
    """
    check_gram(gram, "UPGrad")
    pair = pair_on_host(gram)
    if pair is not None and (preference is None or bool((preference >= 0).all())):
        return _solve_pair(pair, preference, gram)
    host = on_host(gram)  # on the CPU the small solve runs in NumPy (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work, _ = normalize_gram(gram, host=host)
        xp = namespace(work)
        if preference is None:
            mix: Array = xp.ones_like(work[0]) / t
        else:
            mix = to_host(preference) if host else preference.to(work)
        lower = eye(t, like=work) * mix[None, :]  # row i: u = preference_i * e_i
        first = lower
        if start is not None and start.shape == (t, t):
            guess = to_host(start) if host else start.to(work)
            first = xp.where(xp.isfinite(guess), xp.maximum(guess, lower), lower)
        hess = xp.broadcast_to(2 * work, (t, t, t))

        def grad_hess(v: Array) -> tuple[Array, Array]:
            return 2 * v @ work, hess

        solution, _ = minimize_active_set(
            grad_hess,
            first,
            lower,
            fixed=first <= lower,
            simplex=False,
            max_iter=4 * t + 4,
        )
        return from_host(xp.sum(solution, axis=0), gram), from_host(solution, gram)


def _solve_pair(
    pair: tuple[float, float, float], preference: Tensor | None, like: Tensor
) -> tuple[Tensor, Tensor]:
    """:func:`upgrad_solve` for two losses, in closed form (``pair``: the normalized Gram
    matrix ``[[a, b], [b, d]]``, see :func:`pair_on_host`; ``preference`` non-negative).

    The projection for ``u = m_0 e_0`` keeps ``v_0 = m_0`` at its bound, and the other entry
    minimizes ``v^T G v`` over ``v_1 >= 0``: ``v_1 = max(0, -b m_0 / d)`` (0 when the two
    gradients do not conflict, ``b >= 0``). This satisfies every KKT condition:
    ``(G v)_0 = m_0 (a d - b^2) / d >= 0`` where the bound binds. Symmetrically for ``e_1``.
    """
    a, b, d = pair
    m0, m1 = (0.5, 0.5) if preference is None else preference.tolist()
    # A zero diagonal (a zero gradient; then b = 0 too) leaves the other entry at its bound.
    v01 = max(0.0, -b * m0 / d) if d > 0 else 0.0
    v10 = max(0.0, -b * m1 / a) if a > 0 else 0.0
    duals = torch.tensor([[m0, v01], [v10, m1]], dtype=like.dtype)
    return duals.sum(0), duals


class UPGrad(GradientBalancer):
    """UPGrad: average of the gradients, each projected onto the dual cone of all of them.

    The update never conflicts with any balanced loss (``g_i . update >= 0``) and is the mean
    gradient when no two gradients conflict; the reported weights are its coefficients on the
    original gradients (each at least ``1/T``). Note the scale: the update is a mean, so with
    no conflict it is Sum's update divided by T (as in torchjd).

    Args:
        level: ``"parameters"`` (exact) or ``"representation"`` (cheaper).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = {"a": w @ torch.tensor([1.0, 0.0]), "b": w @ torch.tensor([-1.0, 1.0])}
        >>> weights = UPGrad().backward(losses)
        >>> {name: round(value, 4) for name, value in weights.items()}
        {'a': 1.0, 'b': 0.75}
        >>> w.grad  # the inner product with (1, 0) and with (-1, 1) are both >= 0
        tensor([0.2500, 0.7500])
    """

    def __init__(
        self, *, level: Level = "parameters", balance: str | Iterable[str] | None = None
    ) -> None:
        super().__init__(level=level, balance=balance)
        # The previous step's dual vectors: a warm start (the result does not depend on it,
        # so it is not saved with the state).
        self._warm: tuple[tuple[str, ...], Tensor] | None = None

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        warm = self._warm[1] if self._warm is not None and self._warm[0] == ctx.names else None
        weights, duals = upgrad_solve(gramian, start=warm)
        self._warm = (ctx.names, duals.detach())
        return weights
