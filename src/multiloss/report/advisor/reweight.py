"""What weight would give a loss a stated share of the update.

With gradient norms and pairwise cosines logged, the advisor rebuilds the Gram matrix of the
weighted gradients, ``G_jk = (w_j n_j)(w_k n_k) cos_jk``, and with it the share each loss takes
(``share_i = sum_k G_ik / sum_jk G_jk``, the projection of its weighted gradient on the
update). Scaling loss ``i``'s weight by ``k`` makes its share a ratio of quadratics in ``k``;
setting it equal to the target gives a quadratic with exactly one positive root. Without those
diagnostics the contributions are treated as independent magnitudes, ``p = wL / (wL + R)``,
which is exact for the weighted-loss estimate and rough for real gradients.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from multiloss.report.advisor.evidence import Context, median

__all__ = ["gram_weight", "linear_weight", "predicted_shares"]

# A reconstruction that misses the logged shares by more than this (summed over the losses) is
# not trusted: the norms are then probably of another kind than assumed.
_MAX_MISMATCH = 0.25


def linear_weight(weight: float, share: float, target: float) -> float:
    """Weight moving ``share`` to ``target`` when contributions add up as magnitudes.

    Example:
        >>> round(linear_weight(0.001, 0.0001, 0.1), 4)
        1.111
    """
    return weight * target * (1.0 - share) / ((1.0 - target) * share)


def predicted_shares(
    vectors: NDArray[np.float64], cosines: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Shares of the update for weighted-gradient norms ``vectors`` and a cosine matrix.

    Example:
        >>> predicted_shares(np.array([1.0, 1.0]), np.eye(2)).tolist()
        [0.5, 0.5]
    """
    gram = np.outer(vectors, vectors) * cosines
    return np.asarray(gram.sum(axis=1) / gram.sum(), dtype=np.float64)


def _cosine_matrix(ctx: Context) -> NDArray[np.float64] | None:
    size = len(ctx.losses)
    matrix = np.eye(size)
    for i, a in enumerate(ctx.losses):
        for j in range(i + 1, size):
            b = ctx.losses[j]
            first, second = sorted((a, b))
            value = median(ctx.window.column(f"grad/cos/{first}|{second}"))
            if not math.isfinite(value):
                return None
            matrix[i, j] = matrix[j, i] = value
    return matrix


def gram_weight(ctx: Context, loss: str, target: float) -> float | None:
    """The weight giving ``loss`` a ``target`` share, from logged norms and cosines.

    ``None`` when the diagnostics are incomplete or do not reproduce the logged shares.
    """
    cosines = _cosine_matrix(ctx)
    if cosines is None:
        return None
    weights = np.array([ctx.weight(name) for name in ctx.losses])
    norms = np.array([median(ctx.window.column(f"grad/norm/{name}")) for name in ctx.losses])
    logged = np.array([median(ctx.window.column(f"grad/share/{name}")) for name in ctx.losses])
    if not (np.isfinite(weights).all() and np.isfinite(norms).all()):
        return None
    # grad/norm may be the norm of the raw loss's gradient or of the weighted one; keep the
    # reading that reproduces the logged shares.
    candidates = [weights * norms, np.sign(weights) * norms]
    errors = [float(np.nansum(np.abs(predicted_shares(v, cosines) - logged))) for v in candidates]
    best = int(np.argmin(errors))
    if not errors[best] <= _MAX_MISMATCH:
        return None
    vectors = candidates[best]
    index = ctx.losses.index(loss)
    gram = np.outer(vectors, vectors) * cosines
    own = gram[index, index]
    cross = gram[index].sum() - own
    rest = gram.sum() - own - 2.0 * cross
    if own <= 0:
        return None
    # share(k) = (k^2 own + k cross) / (k^2 own + 2 k cross + rest) = target.
    a2, a1, a0 = own * (1 - target), cross * (1 - 2 * target), -target * rest
    root = (-a1 + math.sqrt(max(a1 * a1 - 4 * a2 * a0, 0.0))) / (2 * a2)
    if not root > 0:
        return None
    return float(weights[index] * root)
