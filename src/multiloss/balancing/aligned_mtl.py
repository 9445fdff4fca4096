"""Aligned-MTL (Senushkin et al., 2023): align the loss gradients to an orthogonal, equal-norm set.

Reference: D. Senushkin, N. Patakin, A. Kuznetsov and A. Konushin, "Independent Component
Alignment for Multi-Task Learning", CVPR 2023, Algorithm 1; official code:
github.com/SamsungLabs/MTL ``code/optim/aligned/solver.py`` (``ProcrustesSolver``) and
``aligned/balancer.py`` (``AlignedMTLBalancer(scale_mode='min')``, update = sum of the aligned
gradients).

With the eigen-decomposition of the Gram matrix ``G = V diag(lambda) V^T`` (eigenvalues below
``max(lambda) * T * eps`` are treated as zero, as in the official code), the balance matrix is
``B = sqrt(lambda_scale) V diag(lambda^-1/2) V^T`` and the aligned gradients are the columns of
``J^T B``: orthogonal, with equal norms ``sqrt(lambda_scale)``. The update is their sum, so the
per-loss weights are ``B 1``. ``scale_mode`` picks ``lambda_scale``: the smallest kept
eigenvalue (``"min"``, default), the median (``"median"``) or the mean (``"rmse"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from multiloss._validation import check_choice
from multiloss.balancing._arrays import from_host, namespace
from multiloss.balancing._linalg import (
    check_gram,
    on_host,
    pair_entries,
    solver_matrix,
    solver_scope,
)
from multiloss.balancing._plan import Level
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.gradient import GradientBalancer

__all__ = ["SCALE_MODES", "AlignedMTL", "aligned_mtl_weights"]

#: ``scale_mode`` options, as in the official code.
SCALE_MODES = ("min", "median", "rmse")


def aligned_mtl_weights(gram: Tensor, scale_mode: str = "min") -> Tensor:
    """Per-loss weights of Aligned-MTL from the Gram matrix of the loss gradients.

    Args:
        gram: ``G = J J^T``, shape (T, T).
        scale_mode: One of :data:`SCALE_MODES`.

    Returns:
        ``B 1`` (T,): the Aligned-MTL update is ``J^T B 1``.

    Example:
        >>> import torch
        >>> g = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # orthogonal, different norms
        >>> aligned_mtl_weights(g @ g.T)  # rescaled to the smaller norm
        tensor([0.3333, 1.0000])
    """
    check_gram(gram, "AlignedMTL")
    entries = pair_entries(gram)
    if entries is not None:
        return _pair_weights(entries, scale_mode, gram.dtype)
    host = on_host(gram)  # on the CPU the small decomposition runs in NumPy (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work = solver_matrix(gram, host=host)
        xp = namespace(work)
        work = 0.5 * (work + work.T)
        # An infinite gradient makes the Gram matrix non-finite, and eigh then raises (NumPy,
        # torch on the CPU) or returns garbage. Decompose a finite stand-in and return NaN
        # weights at the end, so the balancer stops with its own error naming the method;
        # no value is read on the device.
        finite = xp.all(xp.isfinite(work))
        work = xp.where(xp.isfinite(work), work, 0.0)
        eigenvalues, vectors = xp.linalg.eigh(work)
        # Rank cut as in the official code; eps of the gradients' own dtype (float32 gradients
        # carry float32 noise even though the decomposition runs in float64).
        cut = xp.max(eigenvalues) * t * torch.finfo(gram.dtype).eps
        kept = eigenvalues > cut
        if scale_mode == "min":
            scale = xp.min(xp.where(kept, eigenvalues, float("inf")))
        elif scale_mode == "median" and host:  # torch's median: the lower middle value
            values = eigenvalues[kept]
            scale = np.quantile(values, 0.5, method="lower") if values.size else 1.0
        elif scale_mode == "median":
            scale = xp.where(kept, eigenvalues, float("nan")).nanmedian()
        else:
            count = xp.clip(xp.sum(kept), 1, None)
            scale = xp.sum(xp.where(kept, eigenvalues, 0)) / count
        safe = xp.where(kept, eigenvalues, 1.0)
        factor = xp.where(kept, xp.sqrt(scale / safe), 0)
        weights = vectors @ (factor * xp.sum(vectors, axis=0))  # V diag(factor) V^T 1
        # All gradients zero: every weight multiplies a zero gradient; report ones (like Sum).
        weights = xp.where(xp.any(kept), weights, xp.ones_like(weights))
        return from_host(xp.where(finite, weights, float("nan")), gram)


def _pair_weights(
    entries: tuple[float, float, float, float], scale_mode: str, dtype: torch.dtype
) -> Tensor:
    """:func:`aligned_mtl_weights` for two losses on the host, on Python floats (``entries``:
    see :func:`pair_entries`; ``dtype``: the Gram matrix's, for the rank cut and the result).

    The eigenvalues of ``[[a, b], [b, d]]`` are ``m +- r`` (``m`` the mean of the diagonal,
    ``r = sqrt(((a - d) / 2)^2 + b^2)``); the smaller is taken as ``det / largest``, which
    keeps its relative precision when it is tiny. The eigenvector of the larger is
    ``(cos t, sin t)`` with ``t = atan2(2 b, a - d) / 2``; ``B 1`` only needs the
    projectors ``v v^T``, so their signs do not matter (nor the choice of vectors when the
    eigenvalues are equal: both factors are then equal).
    """
    a, b, c, d = entries
    b = 0.5 * (b + c)
    mean, radius = 0.5 * (a + d), math.hypot(0.5 * (a - d), b)
    large = mean + radius
    small = (a * d - b * b) / large if large > 0 else 0.0
    angle = 0.5 * math.atan2(2 * b, a - d)
    cos, sin = math.cos(angle), math.sin(angle)
    cut = max(large, small) * 2 * torch.finfo(dtype).eps
    kept = [value for value in (large, small) if value > cut]
    if not kept:  # all gradients zero: report ones (like Sum)
        return torch.ones(2, dtype=dtype)
    if scale_mode == "rmse":
        scale = sum(kept) / len(kept)
    else:  # "min", and "median" (the lower middle value of at most two)
        scale = min(kept)
    weights = [0.0, 0.0]
    for value, (x, y) in ((large, (cos, sin)), (small, (-sin, cos))):
        if value > cut:
            coefficient = math.sqrt(scale / value) * (x + y)  # factor * (v . 1)
            weights[0] += coefficient * x
            weights[1] += coefficient * y
    return torch.tensor(weights, dtype=dtype)


class AlignedMTL(GradientBalancer):
    """Aligned-MTL: replace the loss gradients by the closest orthogonal, equal-norm set.

    The update is the sum of the aligned gradients (official code); the reported weights are
    its coefficients on the original gradients, ``B 1``, and may be negative. With
    ``level="representation"`` this is the paper's Aligned-MTL-UB.

    Args:
        scale_mode: Norm of the aligned gradients: the square root of the smallest (``"min"``,
            default), median (``"median"``) or mean (``"rmse"``) eigenvalue of the Gram matrix.
        level: ``"parameters"`` (exact) or ``"representation"`` (cheaper; Aligned-MTL-UB).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = {"a": w @ torch.tensor([3.0, 0.0]), "b": w @ torch.tensor([0.0, 1.0])}
        >>> weights = AlignedMTL().backward(losses)  # orthogonal: both rescaled to norm 1
        >>> {name: round(value, 4) for name, value in weights.items()}
        {'a': 0.3333, 'b': 1.0}
    """

    def __init__(
        self,
        scale_mode: str = "min",
        *,
        level: Level = "parameters",
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(level=level, balance=balance)
        self.scale_mode = check_choice(scale_mode, "`scale_mode` of AlignedMTL", SCALE_MODES)

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        return aligned_mtl_weights(gramian, self.scale_mode)

    def hyperparameters(self) -> dict[str, object]:
        return {"scale_mode": self.scale_mode, **super().hyperparameters()}
