"""PCGrad (Yu et al., 2020): project conflicting gradients ("gradient surgery").

Reference: T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman and C. Finn, "Gradient Surgery for
Multi-Task Learning", NeurIPS 2020, Algorithm 1; official code: github.com/tianheyu927/PCGrad
(``PCGrad_tf.py``: the projected gradients are summed).

For each loss ``i``, in a fresh random order of the other losses ``j``: if ``g_i^PC . g_j < 0``,
remove the conflicting component, ``g_i^PC -= (g_i^PC . g_j / ||g_j||^2) g_j`` (always against
the original ``g_j``). The update is the sum of the ``g_i^PC``. Each ``g_i^PC`` stays a linear
combination of the original gradients, so the whole procedure runs on the Gram matrix and
returns per-loss weights. The random order is drawn per call from torch's generator on the
Gram matrix's device (``generator=`` to use your own), as in the paper's Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from multiloss.balancing._arrays import arange, eye, from_host, namespace
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

__all__ = ["PCGrad", "pcgrad_weights", "random_orders"]


def random_orders(t: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """For each loss ``i``, a random permutation of the other ``t - 1`` losses: (t, t - 1)."""
    keys = torch.rand(t, t, device=device, generator=generator)
    keys = keys.fill_diagonal_(2.0)  # uniform keys are < 1, so each loss sorts itself last
    return keys.argsort(dim=1)[:, : t - 1]


def pcgrad_weights(gram: Tensor, orders: Tensor | None = None) -> Tensor:
    """Per-loss weights of PCGrad from the Gram matrix of the loss gradients.

    Args:
        gram: ``G = J J^T``, shape (T, T).
        orders: (T, T-1) integer tensor; row ``i`` is the order in which loss ``i`` is projected
            against the others. Default: a fresh :func:`random_orders`.

    Returns:
        ``w`` (T,) such that the PCGrad update ``sum_i g_i^PC`` is ``J^T w``.

    Example:
        >>> import torch
        >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> w = pcgrad_weights(g @ g.T)
        >>> w @ g  # both conflicting components removed
        tensor([0.5000, 1.5000])
    """
    check_gram(gram, "PCGrad")
    entries = pair_entries(gram)
    if entries is not None:
        return _pair_weights(entries, gram)
    host = on_host(gram)  # on the CPU the small loop runs in NumPy (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        if orders is None:
            orders = random_orders(t, gram.device)  # torch's generator: seeds reproduce runs
        work = solver_matrix(gram, host=host)
        order = orders.cpu().numpy() if host else orders
        xp = namespace(work)
        coef = eye(t, like=work)  # row i: g_i^PC in the g basis
        diag = xp.linalg.diagonal(work)
        safe = xp.where(diag > 0, diag, 1.0)
        rows = arange(t, like=work)
        for step in range(t - 1):
            j = order[:, step]
            inner = (coef @ work)[rows, j]  # g_i^PC . g_j
            # A zero gradient g_j has zero inner product with everything, so its step is 0.
            coef[rows, j] -= xp.clip(inner, None, 0) / safe[j]
        return from_host(xp.sum(coef, axis=0), gram)


def _pair_weights(entries: tuple[float, float, float, float], like: Tensor) -> Tensor:
    """:func:`pcgrad_weights` for two losses on the host, on Python floats (``entries``: see
    :func:`pair_entries`).

    With two losses there is one order: ``g_0`` drops its component along ``g_1`` if they
    conflict, and ``g_1`` its component along ``g_0``. Each uses its own row of ``gram`` (as
    the general route does), so the result is the same to rounding, and no random order is
    drawn.
    """
    g00, g01, g10, g11 = entries
    w0 = 1.0 - min(g10, 0.0) / (g00 if g00 > 0 else 1.0)
    w1 = 1.0 - min(g01, 0.0) / (g11 if g11 > 0 else 1.0)
    return torch.tensor([w0, w1], dtype=like.dtype)


class PCGrad(GradientBalancer):
    """PCGrad: each loss gradient drops its components that conflict with the others.

    The update on the shared parameters is ``sum_i g_i^PC`` (see the module docstring); the
    reported per-loss weights are its coefficients on the original gradients (all >= 1, since
    projecting only adds positive multiples of the other gradients). The random projection
    order uses torch's global generator on the losses' device, so ``torch.manual_seed`` makes
    runs repeatable.

    Args:
        level: ``"parameters"`` (exact) or ``"representation"`` (gradients with respect to the
            tensor marked with ``multiloss.mark_representation``; cheaper).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = {"a": w @ torch.tensor([1.0, 0.0]), "b": w @ torch.tensor([-1.0, 1.0])}
        >>> PCGrad().backward(losses)  # g_a . g_b < 0: both conflicting parts are removed
        {'a': 2.0, 'b': 1.5}
        >>> w.grad
        tensor([0.5000, 1.5000])
    """

    def __init__(
        self, *, level: Level = "parameters", balance: str | Iterable[str] | None = None
    ) -> None:
        super().__init__(level=level, balance=balance)

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        return pcgrad_weights(gramian)
