"""Loss-gradient matrices for the gradient-level method tests, and independent references.

The references here share no code with ``multiloss.balancing``: they work on the explicit
gradient vectors (the rows of ``J``), by enumeration or with scipy, so a bug in the Gram-matrix
solvers cannot hide behind the same bug in the reference.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import strategies as st
from torch import Tensor


@st.composite
def jacobians(draw: st.DrawFn, min_rows: int = 2, max_rows: int = 4, max_cols: int = 6) -> Tensor:
    """A (T, P) float64 matrix of loss gradients: entries in [-4, 4], rows of varied scale."""
    rows = draw(st.integers(min_rows, max_rows))
    cols = draw(st.integers(1, max_cols))
    values = draw(
        st.lists(
            # Rounded so that no value is tiny but non-zero (the naive references would
            # underflow where the solvers, which guard zero norms, do not).
            st.floats(-4, 4, allow_nan=False).map(lambda x: round(x, 3)),
            min_size=rows * cols,
            max_size=rows * cols,
        )
    )
    scales = draw(st.lists(st.sampled_from([0.01, 0.3, 1.0, 7.0]), min_size=rows, max_size=rows))
    matrix = torch.tensor(values, dtype=torch.float64).reshape(rows, cols)
    return matrix * torch.tensor(scales, dtype=torch.float64)[:, None]


def random_jacobian(rows: int, cols: int, seed: int, *, shared: float = 0.5) -> Tensor:
    """Rows = a common direction (weight ``shared``) + independent noise, of varied norms."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(1, cols, generator=generator, dtype=torch.float64)
    noise = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    norms = torch.rand(rows, 1, generator=generator, dtype=torch.float64) * 3 + 0.1
    return (shared * common + noise) * norms


def project_onto_dual_cone(vector: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``vector`` onto ``{x : gradients @ x >= 0}`` by enumeration.

    The projection onto a polyhedral cone is the projection onto the subspace
    ``{x : g_j . x = 0, j in S}`` of its active set ``S``; try every ``S`` and keep the closest
    feasible candidate (exact, exponential in the number of rows: tests only).
    """
    rows = gradients.shape[0]
    best, best_distance = None, np.inf
    for size in range(rows + 1):
        for active in itertools.combinations(range(rows), size):
            if active:
                a = gradients[list(active)]
                # Remove the component in the row space of the active gradients.
                candidate = vector - a.T @ np.linalg.lstsq(a @ a.T, a @ vector, rcond=None)[0]
            else:
                candidate = vector.copy()
            if (gradients @ candidate >= -1e-9).all():
                distance = np.linalg.norm(candidate - vector)
                if distance < best_distance - 1e-12:
                    best, best_distance = candidate, distance
    assert best is not None  # x = 0 is always feasible
    return best


def min_norm_in_hull(gradients: np.ndarray) -> float:
    """``min ||sum_i w_i g_i||^2`` over the simplex, exactly, by enumerating supports."""
    rows = gradients.shape[0]
    gram = gradients @ gradients.T
    best = np.inf
    for size in range(1, rows + 1):
        for support in itertools.combinations(range(rows), size):
            sub = gram[np.ix_(support, support)]
            # Minimum of w^T G w on the affine hull {sum w = 1}: KKT system with a multiplier.
            kkt = np.block([[2 * sub, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            rhs = np.concatenate([np.zeros(size), [1.0]])
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if (solution >= -1e-12).all():
                best = min(best, float(solution @ sub @ solution))
    return best
