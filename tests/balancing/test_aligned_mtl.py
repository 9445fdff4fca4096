"""Aligned-MTL: against the SVD of the gradient matrix (Procrustes), modes, rank cut, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings

from multiloss.balancing import AlignedMTL
from multiloss.balancing.aligned_mtl import aligned_mtl_weights
from tests.balancing.gradients import jacobians, random_jacobian


def procrustes_update(g: torch.Tensor, mode: str) -> torch.Tensor:
    """Sum of the aligned gradients from the SVD J = U S V^T: aligned = scale * V U^T."""
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    keep = s > s.max() * g.shape[0] * torch.finfo(torch.float32).eps ** 0.5
    u, s, vh = u[:, keep], s[keep], vh[keep]
    eigenvalues = s**2
    scale = {
        "min": eigenvalues.min(),
        "median": eigenvalues.median(),
        "rmse": eigenvalues.mean(),
    }[mode]
    aligned = scale.sqrt() * (vh.T @ u.T)  # (P, T): column i is the aligned gradient of loss i
    return aligned.sum(dim=1)


@settings(max_examples=60, deadline=None)
@given(g=jacobians(min_rows=2, max_rows=4))
def test_matches_the_svd_construction(g: torch.Tensor) -> None:
    singular = torch.linalg.svdvals(g)
    assume(float(singular[0]) > 0)
    # Rank decided without ambiguity (no singular value near the cut).
    ratio = singular / singular[0]
    assume(bool(((ratio > 1e-2) | (ratio < 1e-9)).all()))
    for mode in ("min", "median", "rmse"):
        update = aligned_mtl_weights(g @ g.T, mode) @ g
        torch.testing.assert_close(update, procrustes_update(g, mode), rtol=1e-6, atol=1e-8)


def test_aligned_gradients_are_orthogonal_with_equal_norms() -> None:
    g = random_jacobian(4, 7, 3)
    gram = g @ g.T
    eigenvalues, vectors = torch.linalg.eigh(gram)
    balance = vectors @ torch.diag(eigenvalues.min().sqrt() / eigenvalues.sqrt()) @ vectors.T
    torch.testing.assert_close(aligned_mtl_weights(gram), balance.sum(dim=1))
    aligned = balance @ g  # row i: aligned gradient of loss i
    torch.testing.assert_close(aligned @ aligned.T, eigenvalues.min() * torch.eye(4, dtype=g.dtype))


def test_orthogonal_gradients_are_rescaled_to_the_smallest() -> None:
    g = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(aligned_mtl_weights(g @ g.T), torch.tensor([1 / 3, 1.0]))


def test_more_losses_than_dimensions_cuts_the_rank() -> None:
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    weights = aligned_mtl_weights(g @ g.T)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights @ g, procrustes_update(g, "min"))


def test_all_zero_gradients_give_ones() -> None:
    assert aligned_mtl_weights(torch.zeros(3, 3)).tolist() == [1.0, 1.0, 1.0]


def test_bad_scale_mode_is_named() -> None:
    with pytest.raises(ValueError, match=r"`scale_mode` of AlignedMTL must be one of \{'min'"):
        AlignedMTL(scale_mode="max")


def test_repr_shows_hyperparameters() -> None:
    assert repr(AlignedMTL()) == "AlignedMTL(scale_mode='min')"
