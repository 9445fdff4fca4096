"""UPGrad: each projection against an exact enumeration in gradient space; non-conflict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from multiloss.balancing import UPGrad
from multiloss.balancing.upgrad import upgrad_solve, upgrad_weights
from tests.balancing.gradients import jacobians, project_onto_dual_cone, random_jacobian


@settings(max_examples=60, deadline=None)
@given(g=jacobians(min_rows=1, max_rows=4))
def test_is_the_mean_of_the_projections_onto_the_dual_cone(g: torch.Tensor) -> None:
    rows = g.numpy()
    expected = np.mean([project_onto_dual_cone(row, rows) for row in rows], axis=0)
    update = (upgrad_weights(g @ g.T) @ g).numpy()
    # Absolute error up to ~1e-7 of the gradients' scale where the cone is nearly degenerate
    # (rows (0, 1), (-1, -0.002), (1, 0) times 0.01: the solver's relative ridge of 1e-12
    # times a Gram condition number ~1e5 leaves 1.7e-9 where the exact update is 0).
    np.testing.assert_allclose(update, expected, rtol=1e-6, atol=1e-6 * np.abs(rows).max())


@settings(max_examples=100, deadline=None)
@given(g=jacobians(min_rows=2, max_rows=6, max_cols=8))
def test_update_conflicts_with_no_loss(g: torch.Tensor) -> None:
    weights = upgrad_weights(g @ g.T)
    assert (weights >= 1 / g.shape[0] - 1e-12).all()
    assert (g @ (weights @ g) >= -1e-9 * float((g * g).sum())).all()


@settings(max_examples=40, deadline=None)
@given(g=jacobians(max_rows=5))
def test_without_conflict_it_is_the_mean(g: torch.Tensor) -> None:
    g = g.abs()
    t = g.shape[0]
    torch.testing.assert_close(upgrad_weights(g @ g.T), torch.full((t,), 1 / t, dtype=g.dtype))


def test_two_conflicting_gradients_by_hand() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    # proj(g1) = (1/2, 1/2) = g1 + g2/2; proj(g2) = (0, 1) = g2 + g1; mean: (1, 3/4).
    torch.testing.assert_close(upgrad_weights(g @ g.T), torch.tensor([1.0, 0.75]))


def test_opposite_gradients_give_zero_update() -> None:
    g = torch.tensor([[1.0, 2.0], [-2.0, -4.0]])
    weights = upgrad_weights(g @ g.T)
    assert torch.isfinite(weights).all()
    # Zero up to the float32 rounding of the Gram matrix (relative ~1e-7).
    torch.testing.assert_close(weights @ g, torch.zeros(2), atol=1e-5 * float(g.norm()), rtol=0)


def test_warm_start_gives_the_same_weights() -> None:
    g = random_jacobian(6, 8, 5, shared=-0.3)  # plenty of conflicts
    cold, duals = upgrad_solve(g @ g.T)
    other = random_jacobian(6, 8, 6, shared=-0.3)
    _, elsewhere = upgrad_solve(other @ other.T)
    for start in (duals, elsewhere, torch.full((6, 6), float("nan")), torch.zeros(6, 6)):
        torch.testing.assert_close(upgrad_solve(g @ g.T, start=start)[0], cold)


def test_bad_gram_is_named() -> None:
    with pytest.raises(ValueError, match=r"`gram` of UPGrad must be a square"):
        upgrad_weights(torch.ones(3))


def test_repr() -> None:
    assert repr(UPGrad()) == "UPGrad()"
