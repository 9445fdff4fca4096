"""The Frank-Wolfe min-norm solver, against an exact enumeration of the supports."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from multiloss.balancing._minnorm import min_norm_exact, min_norm_weights, segment_min
from tests.balancing.gradients import jacobians, min_norm_in_hull


def test_segment_by_hand() -> None:
    # |gamma (2, 0) + (1 - gamma) (0, 1)|^2 = 4 gamma^2 + (1 - gamma)^2, minimal at 0.2.
    gamma, cost = segment_min(torch.tensor(4.0), torch.tensor(0.0), torch.tensor(1.0))
    assert float(gamma) == pytest.approx(0.2)
    assert float(cost) == pytest.approx(0.8)
    # One end is closest: (1, 0) and (2, 0).
    gamma, cost = segment_min(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0))
    assert (float(gamma), float(cost)) == (1.0, 1.0)


@settings(max_examples=80, deadline=None)
@given(g=jacobians(min_rows=1, max_rows=5))
def test_reaches_the_exact_minimum_norm(g: torch.Tensor) -> None:
    w, iterations = min_norm_weights(g @ g.T)
    assert float(w.sum()) == pytest.approx(1.0)
    assert (w >= 0).all()
    assert int(iterations) <= 250
    exact = min_norm_in_hull(g.numpy())
    found = float((w @ g).norm() ** 2)
    # Frank-Wolfe stops when the weights move by less than 1e-5 (L1) or after 250 iterations,
    # which does not bound the gap tightly: on nearly orthogonal gradients it is still ~1e-3
    # of the scale (the exact solver below is held to 1e-10).
    assert found <= exact + 2e-3 * float((g * g).sum()) + 1e-12


def test_two_gradients_are_solved_in_closed_form() -> None:
    g = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64)
    w, iterations = min_norm_weights(g @ g.T)
    # gamma = (g2 - g1) . g2 / |g1 - g2|^2
    gamma = (g[1] - g[0]) @ g[1] / ((g[0] - g[1]) @ (g[0] - g[1]))
    torch.testing.assert_close(w, torch.stack([gamma, 1 - gamma]))
    assert int(iterations) == 0


def test_origin_inside_the_hull_gives_zero_update() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    w, _ = min_norm_weights(g @ g.T, max_iter=2000, tol=1e-9)
    assert float((w @ g).norm()) < 1e-3


def test_respects_the_iteration_budget() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    _, iterations = min_norm_weights(g @ g.T, max_iter=7, tol=0.0)
    assert int(iterations) == 7


def test_single_loss_and_bad_gram() -> None:
    w, _ = min_norm_weights(torch.tensor([[4.0]]))
    assert w.tolist() == [1.0]
    with pytest.raises(ValueError, match=r"`gram` of MGDA must have at least one row"):
        min_norm_weights(torch.zeros(0, 0))


@settings(max_examples=80, deadline=None)
@given(g=jacobians(min_rows=1, max_rows=5))
def test_exact_solver_reaches_the_minimum_norm(g: torch.Tensor) -> None:
    w, _ = min_norm_exact(g @ g.T)
    assert float(w.sum()) == pytest.approx(1.0)
    assert (w >= 0).all()
    exact = min_norm_in_hull(g.numpy())
    assert float((w @ g).norm() ** 2) <= exact + 1e-10 * float((g * g).sum()) + 1e-15


def test_exact_solver_is_fast_where_frank_wolfe_zigzags() -> None:
    g = torch.eye(6, dtype=torch.float64) * torch.arange(1, 7)[:, None]  # orthogonal
    _, fw_iterations = min_norm_weights(g @ g.T)
    w, iterations = min_norm_exact(g @ g.T)
    # Orthogonal gradients: w_i proportional to 1 / ||g_i||^2.
    expected = 1 / torch.arange(1, 7, dtype=torch.float64) ** 2
    torch.testing.assert_close(w, expected / expected.sum())
    assert int(iterations) <= 2 < int(fw_iterations)
