"""IMTL-G (Liu et al., 2021): the update with equal projections on every loss direction.

Reference: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao and W. Zhang,
"Towards Impartial Multi-task Learning", ICLR 2021, Section 3.2 (gradient balance, IMTL-G).
The paper has no official code release; the implementation in the Nash-MTL repository
(``methods/weight_methods.py``, ``IMTLG``) is the reference used by later work.

IMTL-G looks for ``d = J^T alpha`` with ``sum(alpha) = 1`` whose projection on every unit
gradient ``u_i = g_i / ||g_i||`` is the same. The paper's closed form
``alpha_{2:T} = g_1 U^T (D U^T)^{-1}`` (``D``, ``U``: differences of gradients and of unit
gradients) is algebraically ``alpha ∝ G^{-1} n`` with ``n_i = ||g_i||``, which is what is
computed here, on the Gram matrix. A singular Gram matrix (linearly dependent gradients) is
handled with a small ridge (the Nash-MTL code falls back to ``+1e-8 I`` the same way), which
for exactly opposite gradients gives the natural answer ``alpha = (1/2, 1/2)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from multiloss.balancing._arrays import eye, from_host, namespace, solve
from multiloss.balancing._linalg import (
    check_gram,
    normalize_gram,
    on_host,
    pair_entries,
    repair_pair,
    solver_matrix,
    solver_scope,
)
from multiloss.balancing._plan import Level
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.gradient import GradientBalancer

__all__ = ["IMTL", "imtl_weights"]

_RIDGE = 1e-12


def imtl_weights(gram: Tensor) -> Tensor:
    """Per-loss weights of IMTL-G (they sum to 1 and may be negative).

    Args:
        gram: ``G = J J^T``, shape (T, T).

    Returns:
        ``alpha`` (T,) such that the IMTL-G update is ``J^T alpha``.

    Example:
        >>> import torch
        >>> g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> alpha = imtl_weights(g @ g.T)
        >>> d = alpha @ g
        >>> u = g / g.norm(dim=1, keepdim=True)
        >>> torch.allclose(u @ d, (u @ d)[0].expand(2))  # equal projections
        True
    """
    check_gram(gram, "IMTL")
    entries = pair_entries(gram)
    if entries is not None:
        return _pair_weights(entries, gram)
    host = on_host(gram)  # on the CPU the small solve runs in NumPy (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work, trace = normalize_gram(gram, host=host)
        xp = namespace(work)
        # The norms come from the diagonal before normalize_gram's repair shift: a zero
        # gradient (a loss weighted 0 this step) would otherwise get the shift's root as its
        # norm, and through G^-1 nearly all the weight, leaving almost no update.
        unshifted = xp.linalg.diagonal(solver_matrix(gram, host=host))
        norms = xp.sqrt(xp.clip(unshifted / xp.where(trace > 0, trace, 1.0), 0, None))
        # A zero gradient takes no part: its row and column of the system are the identity's,
        # so its weight is its norm, 0, and the others' are IMTL-G's of the other gradients.
        zero = norms <= 0
        identity = eye(t, like=work)
        work = xp.where(zero[:, None] | zero[None, :], identity, work)
        v = solve(work + _RIDGE * identity, norms)
        total = xp.sum(v)
        # All gradients zero: nothing to balance, report the plain average.
        safe = xp.where(xp.abs(total) > 0, total, 1.0)
        alpha = xp.where(xp.abs(total) > 0, v / safe, xp.ones_like(v) / t)
        return from_host(alpha, gram)


def _pair_weights(entries: tuple[float, float, float, float], like: Tensor) -> Tensor:
    """:func:`imtl_weights` for two losses on the host (``entries``: the Gram matrix's, see
    :func:`pair_entries`), on Python floats: the 2 x 2 solve by Cramer's rule, whose
    determinant cancels in ``v / sum(v)``. A zero gradient gets weight 0 (both zero: 1/2)."""
    a, b, c, d = entries
    if not (a > 0 and d > 0):
        alpha = [0.5, 0.5] if a <= 0 and d <= 0 else [float(a > 0), float(d > 0)]
        return torch.tensor(alpha, dtype=like.dtype)
    b, trace = 0.5 * (b + c), a + d
    a, b, d = a / trace, b / trace, d / trace
    n0, n1 = math.sqrt(a), math.sqrt(d)  # before the repair shift, as in the general route
    a, d = repair_pair(a, b, d, like.dtype)
    v0 = (d + _RIDGE) * n0 - b * n1
    v1 = (a + _RIDGE) * n1 - b * n0
    total = v0 + v1
    alpha = [v0 / total, v1 / total] if total != 0 else [0.5, 0.5]
    return torch.tensor(alpha, dtype=like.dtype)


class IMTL(GradientBalancer):
    """IMTL-G: the update whose projection on every loss's gradient direction is equal.

    The reported weights sum to 1 and may be negative (a loss whose gradient is nearly
    parallel to another's can get a negative weight so that the projections come out equal).
    This is the gradient half of IMTL ("IMTL-G"); its loss-scaling half (IMTL-L) is a
    loss-weighting method and composes with this one as a wrapper.

    Args:
        level: ``"parameters"`` (exact) or ``"representation"`` (cheaper).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = {"a": w @ torch.tensor([2.0, 0.0]), "b": w @ torch.tensor([0.0, 1.0])}
        >>> weights = IMTL().backward(losses)  # equal projections on (1, 0) and (0, 1)
        >>> {name: round(value, 4) for name, value in weights.items()}
        {'a': 0.3333, 'b': 0.6667}
        >>> w.grad
        tensor([0.6667, 0.6667])
    """

    def __init__(
        self, *, level: Level = "parameters", balance: str | Iterable[str] | None = None
    ) -> None:
        super().__init__(level=level, balance=balance)

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        return imtl_weights(gramian)
