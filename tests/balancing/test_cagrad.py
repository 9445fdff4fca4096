"""CAGrad: checked against scipy's SLSQP (the official code's solver) and the primal problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize, minimize_scalar

from multiloss.balancing import CAGrad
from multiloss.balancing._linalg import pair_on_host
from multiloss.balancing.cagrad import cagrad_solve, cagrad_weights
from tests.balancing.gradients import jacobians, min_norm_in_hull, random_jacobian


def official_slsqp(g: np.ndarray, c: float) -> np.ndarray:
    """The official ``cagrad`` (rescale=1, times T) with a tight tolerance, on the vectors."""
    t = g.shape[0]
    gram = g @ g.T
    g0_norm = np.sqrt(gram.mean())
    b = np.ones(t) / t

    def objective(x: np.ndarray) -> float:
        return float(x @ gram @ b + c * g0_norm * np.sqrt(x @ gram @ x + 1e-20))

    result = minimize(
        objective,
        b.copy(),
        bounds=[(0, 1)] * t,
        constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    gw = result.x @ g
    update = g.mean(axis=0) + c * g0_norm / np.linalg.norm(gw) * gw
    return t * update / (1 + c * c)


@pytest.mark.parametrize(("rows", "cols", "seed"), [(2, 3, 0), (3, 5, 1), (4, 2, 2), (5, 40, 3)])
@pytest.mark.parametrize("c", [0.1, 0.4, 0.9])
def test_matches_the_official_formula_solved_by_slsqp(
    rows: int, cols: int, seed: int, c: float
) -> None:
    g = random_jacobian(rows, cols, seed)
    update = cagrad_weights(g @ g.T, c) @ g
    expected = torch.from_numpy(official_slsqp(g.numpy(), c))
    torch.testing.assert_close(update, expected, rtol=1e-5, atol=1e-6 * float(g.norm()))


def test_two_losses_by_scalar_minimization() -> None:
    """T = 2 as in the official toy script: a bounded scalar minimization over [0, 1]."""
    g = torch.tensor([[1.0, 0.0], [-0.5, 1.0]], dtype=torch.float64)
    c, g0 = 0.4, g.mean(dim=0)

    def objective(x: float) -> float:
        gw = x * g[0] + (1 - x) * g[1]
        return float(gw @ g0 + c * g0.norm() * gw.norm())

    x = minimize_scalar(objective, bounds=(0, 1), method="bounded", options={"xatol": 1e-12}).x
    gw = x * g[0] + (1 - x) * g[1]
    expected = 2 * (g0 + c * g0.norm() / gw.norm() * gw) / (1 + c * c)
    torch.testing.assert_close(cagrad_weights(g @ g.T, c) @ g, expected, rtol=1e-7, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(g=jacobians(max_rows=4), c=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_update_is_the_best_worst_case_in_the_ball(g: torch.Tensor, c: float, seed: int) -> None:
    """Primal problem: d maximizes min_i g_i . d over the ball ||d - g0|| <= c ||g0||."""
    t = g.shape[0]
    g0 = g.mean(dim=0)
    radius = c * float(g0.norm())
    # Not Pareto-stationary (no convex combination of the gradients vanishes: the dual's
    # g_w would be 0 and CAGrad falls back to the mean gradient), and a non-trivial ball.
    assume(min_norm_in_hull(g.numpy()) > 1e-6 * float((g * g).sum()))
    assume(radius > 1e-6)
    d = cagrad_weights(g @ g.T, c) @ g * (1 + c * c) / t
    assert float((d - g0).norm()) <= radius * (1 + 1e-6) + 1e-9
    best = float((g @ d).min())
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(500, g.shape[1], generator=generator, dtype=g.dtype)
    directions = directions / directions.norm(dim=1, keepdim=True)
    lengths = torch.rand(500, 1, generator=generator, dtype=g.dtype) ** (1 / g.shape[1])
    others = g0 + radius * lengths * directions
    assert float((others @ g.T).min(dim=1).values.max()) <= best + 1e-7 * float(g.norm() ** 2)


def test_c_zero_is_sum_and_rescale_options() -> None:
    g = random_jacobian(3, 4, 5)
    torch.testing.assert_close(cagrad_weights(g @ g.T, 0.0), torch.ones(3, dtype=g.dtype))
    quadratic = cagrad_weights(g @ g.T, 0.5, "quadratic")
    torch.testing.assert_close(cagrad_weights(g @ g.T, 0.5, "none"), quadratic * 1.25)
    torch.testing.assert_close(cagrad_weights(g @ g.T, 0.5, "linear"), quadratic * 1.25 / 1.5)


def test_pareto_stationary_point_falls_back_to_the_mean_gradient() -> None:
    g = torch.tensor([[0.0, 0.0], [0.0, -0.0069], [0.0, 0.01], [0.01, 0.0]], dtype=torch.float64)
    weights = cagrad_weights(g @ g.T, 0.5)  # a zero gradient: 0 is in the convex hull
    torch.testing.assert_close(weights, torch.full((4,), 1 / 1.25, dtype=g.dtype))


def test_warm_start_gives_the_same_weights() -> None:
    g = random_jacobian(6, 9, 3)
    cold = cagrad_weights(g @ g.T)
    for start in (torch.eye(6)[2], torch.full((6,), float("nan")), torch.ones(6)):
        torch.testing.assert_close(cagrad_weights(g @ g.T, start=start), cold)


def test_weights_are_positive_and_finite_on_degenerate_input() -> None:
    for g in (
        torch.zeros(3, 4),
        torch.tensor([[1.0, 0.0], [-1.0, 0.0]]),  # mean gradient zero
        torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]]),  # dependent rows, a zero row
    ):
        weights = cagrad_weights(g @ g.T)
        assert torch.isfinite(weights).all()
        assert (weights > 0).all()


def test_one_loss_formula() -> None:
    """T = 1: w = 1, lambda = c, so the update is g (1 + c) / (1 + c^2) (the balancer short-
    circuits one loss to Sum; the function itself follows the formula)."""
    g = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(cagrad_weights(g @ g.T, 0.4), torch.tensor([1.4 / 1.16]))


def test_balancer_reports_the_update_coefficients() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    rows = torch.tensor([[1.0, 0.0], [-0.5, 1.0]])
    used = CAGrad().backward({"a": w @ rows[0], "b": w @ rows[1]})
    torch.testing.assert_close(w.grad, torch.tensor([used["a"], used["b"]]) @ rows)
    assert w.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"c": -0.1}, ValueError, r"`c` of CAGrad must be >= 0.0; got -0.1"),
        ({"c": float("nan")}, ValueError, "`c` of CAGrad must be a finite float"),
        ({"rescale": "sqrt"}, ValueError, r"`rescale` of CAGrad must be one of \{'quadratic'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        CAGrad(**kwargs)


def test_repr_shows_hyperparameters() -> None:
    assert repr(CAGrad()) == "CAGrad(c=0.4)"
    assert repr(CAGrad(0.2, rescale="none")) == "CAGrad(c=0.2, rescale='none')"


def test_the_warm_start_keeps_the_solver_precision() -> None:
    g = torch.randn(4, 9, generator=torch.Generator().manual_seed(2))
    _, dual = cagrad_solve(g @ g.T)
    assert dual.dtype == torch.float64  # float32 would cost a Newton step at the next call
    torch.testing.assert_close(cagrad_solve(g @ g.T, start=dual)[1], dual, atol=1e-9, rtol=0)


@settings(max_examples=80, deadline=None)
@given(
    entries=st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3)),
    radius=st.floats(1e-3, 2.0),
)
def test_the_two_loss_closed_form_minimizes_the_dual(
    entries: tuple[float, float, float, float], radius: float
) -> None:
    # On the segment w = (x, 1 - x), no grid point has a smaller dual objective.
    from multiloss.balancing.cagrad import _SMOOTH, _solve_pair

    g = torch.tensor(entries, dtype=torch.float64).reshape(2, 2)
    pair = pair_on_host(g @ g.T)
    assert pair is not None
    a, b, d = pair
    work = torch.tensor([[a, b], [b, d]], dtype=torch.float64)
    mean = work.mean(dim=1)

    def objective(x: torch.Tensor) -> torch.Tensor:
        w = torch.stack([x, 1 - x], dim=-1)
        quad = ((w @ work) * w).sum(-1).clamp_min(0)
        return w @ mean + radius * (quad + _SMOOTH).sqrt()

    x = torch.tensor(float(_solve_pair(pair, radius)[0]), dtype=torch.float64)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    assert float(objective(x)) <= float(objective(grid).min()) + 1e-12
