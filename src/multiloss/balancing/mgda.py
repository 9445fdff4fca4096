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

import torch
from torch import Tensor

from multiloss.balancing._linalg import check_gram
from multiloss.balancing._minnorm import min_norm_weights

__all__ = ["NORMALIZATIONS", "mgda_weights"]

#: ``normalization`` options, named as in the official code.
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def mgda_weights(
    gram: Tensor,
    losses: Tensor | None = None,
    *,
    normalization: str = "none",
    max_iter: int = 250,
    tol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Per-loss weights of MGDA (on the simplex) and the Frank-Wolfe iterations used.

    Args:
        gram: ``G = J J^T``, shape (T, T).
        losses: Loss values (T,), needed by the ``"loss"`` and ``"loss+"`` normalizations,
            which assume positive losses (non-positive ones give non-finite weights).
        normalization: One of :data:`NORMALIZATIONS`.
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
    if normalization == "none":
        return min_norm_weights(gram, max_iter=max_iter, tol=tol)
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
    return min_norm_weights(normalized, max_iter=max_iter, tol=tol)
