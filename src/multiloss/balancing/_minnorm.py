"""Minimum-norm point of the convex hull of the loss gradients, by Frank-Wolfe (MGDA's solver).

Reference: O. Sener and V. Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018, Algorithm 2; official code: github.com/isl-org/MultiObjectiveOptimization
``multi_task/min_norm_solvers.py`` (``MinNormSolver.find_min_norm_element_FW``,
``MAX_ITER = 250``, ``STOP_CRIT = 1e-5``).

As in the official solver: start from the best pair (the closed-form minimum over every
segment ``[g_i, g_j]``), then run Frank-Wolfe with exact line search until the weights move by
less than ``tol`` (L1) or ``max_iter`` iterations have run. Everything uses the Gram matrix only.
One deliberate difference: the official two-point step clips the line-search coefficient to
0.999 / 0.001 at the ends of the segment; here it is clipped to exactly 1 / 0, so a converged
solution stays put instead of drifting by 0.1% per iteration, and a vertex can be reached.
"""

from __future__ import annotations

import torch
from torch import Tensor

from multiloss.balancing._arrays import Array, arange, from_host, namespace
from multiloss.balancing._linalg import (
    check_gram,
    normalize_gram,
    on_host,
    pair_on_host,
    solver_scope,
)
from multiloss.balancing._qp import minimize_active_set

__all__ = ["min_norm_exact", "min_norm_weights", "segment_min"]


def segment_min(aa: Array, ab: Array, bb: Array) -> tuple[Array, Array]:
    """``argmin_{gamma in [0, 1]} ||gamma a + (1 - gamma) b||^2`` from the three inner products.

    Returns ``(gamma, squared norm at gamma)``, elementwise over broadcastable inputs (tensors,
    or NumPy arrays on the host).
    """
    xp = namespace(aa)
    denom = aa + bb - 2 * ab
    safe = xp.where(denom > 0, denom, 1.0)
    gamma = xp.clip(xp.where(denom > 0, (bb - ab) / safe, 1.0), 0, 1)
    cost = gamma * gamma * aa + (1 - gamma) * (1 - gamma) * bb + 2 * gamma * (1 - gamma) * ab
    return gamma, cost


def _segment_min_floats(aa: float, ab: float, bb: float) -> tuple[float, float]:
    """:func:`segment_min` on Python floats: ``(gamma, squared norm at gamma)``."""
    denom = aa + bb - 2 * ab
    gamma = min(max((bb - ab) / denom, 0.0), 1.0) if denom > 0 else 1.0
    return gamma, gamma * gamma * aa + (1 - gamma) * (1 - gamma) * bb + 2 * gamma * (1 - gamma) * ab


def _pair_weights(gram: Tensor) -> tuple[Tensor, Tensor] | None:
    """The minimum-norm weights of two losses on the host, in closed form (the segment's
    minimum, which both solvers reach); ``None`` where the general route runs."""
    pair = pair_on_host(gram)
    if pair is None:
        return None
    a, b, d = pair
    gamma, _ = _segment_min_floats(a, b, d)
    return (
        torch.tensor([gamma, 1.0 - gamma], dtype=gram.dtype),
        torch.zeros((), dtype=torch.long),
    )


def min_norm_weights(
    gram: Tensor, *, max_iter: int = 250, tol: float = 1e-5
) -> tuple[Tensor, Tensor]:
    """Weights ``w`` on the simplex minimizing ``||J^T w||`` given ``G = J J^T`` (Frank-Wolfe).

    Args:
        gram: (T, T) Gram matrix of the (possibly normalized) loss gradients.
        max_iter: Frank-Wolfe iteration budget after the pair initialization (official 250).
        tol: Stop when the weights move by less than this in L1 norm (official 1e-5).

    Returns:
        ``(w, iterations)``: weights (T,) in the dtype of ``gram`` summing to 1, and the number
        of Frank-Wolfe iterations run (0-dim tensor).

    Example:
        >>> import torch
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> w, _ = min_norm_weights(g @ g.T)
        >>> w.tolist()  # the midpoint of the segment is the closest point to the origin
        [0.5, 0.5]
    """
    check_gram(gram, "MGDA")
    paired = _pair_weights(gram)
    if paired is not None:
        return paired
    host = on_host(gram)  # on the CPU the solve runs on the host (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work, _ = normalize_gram(gram, host=host)
        xp = namespace(work)
        iterations = torch.zeros((), dtype=torch.long, device=gram.device)
        if t == 1:
            return torch.ones(1, dtype=gram.dtype, device=gram.device), iterations
        # Best pair: closed-form minimum on every segment [g_i, g_j], i < j.
        diag = xp.linalg.diagonal(work)
        gamma, cost = segment_min(diag[:, None], work, diag[None, :])
        upper = xp.triu(xp.ones_like(work), 1) > 0
        # One-hot arithmetic instead of indexing with device tensors: never a host read.
        chosen = xp.argmin(xp.reshape(xp.where(upper, cost, float("inf")), (-1,)))
        pick = (arange(t * t, like=work) == chosen) * xp.ones_like(xp.reshape(work, (-1,)))
        pick = xp.reshape(pick, (t, t))
        g = xp.sum(gamma * pick)
        w = g * xp.sum(pick, axis=1) + (1 - g) * xp.sum(pick, axis=0)  # g e_i + (1 - g) e_j
        if t == 2:
            return from_host(w, gram), iterations
        if host:
            # The loop runs on Python floats: a Frank-Wolfe iteration is a handful of scalar
            # operations, and as tensor operations it would cost 30 dispatches.
            weights, count = _frank_wolfe_host(work.tolist(), w.tolist(), max_iter, tol)
            return torch.tensor(weights, dtype=gram.dtype), torch.tensor(count)
        gw = work @ w
        index = torch.arange(t, device=work.device)
        for _ in range(max_iter):
            # Frank-Wolfe vertex: the gradient with the least inner product with the current point.
            vertex = (index == gw.argmin()).to(work.dtype)  # e_k
            column = vertex @ work  # G e_k
            step, _ = segment_min(w @ gw, vertex @ gw, vertex @ column)  # weight kept on w
            move = (1 - step) * (vertex - w)
            moving = move.abs().sum() >= tol
            iterations = iterations + moving.long()
            w = torch.where(moving, w + move, w)
            gw = torch.where(moving, step * gw + (1 - step) * column, gw)
        return w.to(gram.dtype), iterations


def _frank_wolfe_host(
    gram: list[list[float]], w: list[float], max_iter: int, tol: float
) -> tuple[list[float], int]:
    """The same Frank-Wolfe iterations as the tensor loop above, on Python floats.

    Two identities keep an iteration at O(T): ``w . Gw`` after the step is the segment
    minimum's cost (already computed), and the L1 norm of the move ``(1 - step)(e_k - w)`` is
    ``2 (1 - step)(1 - w_k)`` for ``w`` on the simplex.
    """
    t = len(w)
    gw = [sum(row[j] * w[j] for j in range(t)) for row in gram]
    aa = sum(a * b for a, b in zip(w, gw, strict=True))
    for count in range(max_iter):
        k = min(range(t), key=gw.__getitem__)
        ab, bb = gw[k], gram[k][k]
        step, cost = _segment_min_floats(aa, ab, bb)
        if 2 * (1 - step) * (1 - w[k]) < tol:
            return w, count
        keep = 1 - step
        w = [step * wi for wi in w]
        w[k] += keep
        gw = [step * g + keep * gram[i][k] for i, g in enumerate(gw)]
        aa = cost
    return w, max_iter


def min_norm_exact(gram: Tensor) -> tuple[Tensor, Tensor]:
    """The same minimum-norm weights, exactly, by the active-set solver of ``_qp.py``.

    From the uniform weights, one Newton step on the simplex's affine hull already gives the
    answer when the minimum-norm point is inside the hull (all losses active); each loss
    dropped from the support costs one more step. Much faster than Frank-Wolfe when the
    gradients are close to orthogonal (where Frank-Wolfe zigzags for its 250 iterations).

    Example:
        >>> import torch
        >>> g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> w, _ = min_norm_exact(g @ g.T)
        >>> w
        tensor([0.2000, 0.8000])
    """
    check_gram(gram, "MGDA")
    paired = _pair_weights(gram)
    if paired is not None:
        return paired
    host = on_host(gram)  # on the CPU the small solve runs in NumPy (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work, _ = normalize_gram(gram, host=host)
        xp = namespace(work)
        start = xp.ones_like(work[:1]) / t
        hess = 2 * work[None]

        def grad_hess(v: Array) -> tuple[Array, Array]:
            return 2 * v @ work, hess

        w, iterations = minimize_active_set(
            grad_hess,
            start,
            xp.zeros_like(start),
            fixed=xp.zeros_like(start) > 0,
            simplex=True,
            max_iter=2 * t + 4,
        )
        return from_host(w[0], gram), torch.as_tensor(iterations, device=gram.device)
