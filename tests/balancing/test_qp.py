"""The active-set Newton solver, on problems with closed-form solutions."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.balancing._qp import minimize_active_set

floats = st.floats(-3, 3, allow_nan=False).map(lambda x: round(x, 3))


def simplex_projection(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex (sort-based; Held et al. 1974)."""
    u, _ = torch.sort(y, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(y) + 1, dtype=y.dtype)
    rho = int(torch.nonzero(u - cumulative / k > 0).max())
    return torch.clamp(y - cumulative[rho] / (rho + 1), min=0)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_bound_constrained_separable_quadratic(data: st.DataObject) -> None:
    t = data.draw(st.integers(1, 6))
    center = torch.tensor(data.draw(st.lists(floats, min_size=t, max_size=t)), dtype=torch.float64)
    lower = torch.tensor(data.draw(st.lists(floats, min_size=t, max_size=t)), dtype=torch.float64)
    curvature = torch.tensor(
        data.draw(st.lists(st.floats(0.1, 5), min_size=t, max_size=t)), dtype=torch.float64
    )

    def grad_hess(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * curvature * (v - center), torch.diag(2 * curvature)[None]

    start = torch.maximum(lower, center.new_zeros(t))[None]  # feasible, nothing fixed
    v, iterations = minimize_active_set(
        grad_hess,
        start,
        lower[None],
        fixed=torch.zeros(1, t, dtype=torch.bool),
        simplex=False,
        max_iter=50,
    )
    torch.testing.assert_close(v[0], torch.maximum(center, lower))
    assert int(iterations) <= 2 * t + 2


@settings(max_examples=60, deadline=None)
@given(st.lists(floats, min_size=1, max_size=7))
def test_simplex_constrained_least_squares_is_the_simplex_projection(values: list[float]) -> None:
    y = torch.tensor(values, dtype=torch.float64)
    t = len(values)

    def grad_hess(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * (v - y), 2 * torch.eye(t, dtype=v.dtype)[None]

    start = torch.full((1, t), 1 / t, dtype=torch.float64)
    v, _ = minimize_active_set(
        grad_hess,
        start,
        torch.zeros_like(start),
        fixed=torch.zeros(1, t, dtype=torch.bool),
        simplex=True,
        max_iter=50,
    )
    torch.testing.assert_close(v[0], simplex_projection(y), atol=1e-12, rtol=0)


def exp_simplex_reference(a: torch.Tensor) -> torch.Tensor:
    """argmin sum(exp(w)) + a . w over the simplex: w_i = max(0, log(mu - a_i)), by bisection."""

    def total(mu: float) -> float:
        return float(torch.log(torch.clamp(mu - a, min=1.0)).sum())

    low, high = float(a.min()) + 1, float(a.max()) + 1 + 2.0 * len(a)
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if total(middle) < 1 else (low, middle)
    return torch.log(torch.clamp((low + high) / 2 - a, min=1.0))


@settings(max_examples=40, deadline=None)
@given(st.lists(floats, min_size=2, max_size=6))
def test_non_quadratic_objective_with_line_search(values: list[float]) -> None:
    """A smooth non-quadratic objective: Newton steps need the backtracking line search."""
    a = torch.tensor(values, dtype=torch.float64)
    t = len(values)

    def value(v: torch.Tensor) -> torch.Tensor:
        return torch.exp(v).sum(dim=-1) + v @ a

    def grad_hess(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(v) + a, torch.diag_embed(torch.exp(v))

    start = torch.full((1, t), 1 / t, dtype=torch.float64)
    v, _ = minimize_active_set(
        grad_hess,
        start,
        torch.zeros_like(start),
        fixed=torch.zeros(1, t, dtype=torch.bool),
        simplex=True,
        value=value,
        max_iter=100,
    )
    # A line search on the objective's value stops once the decrease falls below the value's
    # rounding: about sqrt(eps) from the minimizer in the worst case (a variable released from
    # its bound late, e.g. a = [0, 0, 0, 0, -1.363, 0] ends 1.3e-8 away). The quadratic
    # problems of UPGrad and MGDA need no line search and are exact to rounding.
    torch.testing.assert_close(v[0], exp_simplex_reference(a), atol=1e-7, rtol=1e-6)


def test_batched_problems_are_independent_and_budget_is_respected() -> None:
    y = torch.tensor([[0.2, 0.9, -1.0], [5.0, 5.0, 5.0]], dtype=torch.float64)

    def grad_hess(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * (v - y), 2 * torch.eye(3, dtype=v.dtype).expand(2, 3, 3)

    start = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    v, _ = minimize_active_set(
        grad_hess,
        start,
        torch.zeros_like(start),
        fixed=torch.zeros(2, 3, dtype=torch.bool),
        simplex=True,
        max_iter=50,
    )
    torch.testing.assert_close(v[0], simplex_projection(y[0]))
    torch.testing.assert_close(v[1], simplex_projection(y[1]))
    _, iterations = minimize_active_set(
        grad_hess,
        start,
        torch.zeros_like(start),
        fixed=torch.zeros(2, 3, dtype=torch.bool),
        simplex=True,
        max_iter=1,
    )
    assert int(iterations) == 1


def test_started_at_its_minimizer_a_non_quadratic_problem_needs_no_line_search() -> None:
    # A warm start at the previous step's solution (CAGrad every step) takes one Newton step
    # that moves nothing, then the multiplier test: the objective's value is never evaluated.
    a = torch.tensor([0.3, -0.2, 0.5, 0.0], dtype=torch.float64)
    minimizer = exp_simplex_reference(a)[None]
    evaluated: list[int] = []

    def value(v: torch.Tensor) -> torch.Tensor:
        evaluated.append(1)
        return torch.exp(v).sum(dim=-1) + v @ a

    def grad_hess(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(v) + a, torch.diag_embed(torch.exp(v))

    v, iterations = minimize_active_set(
        grad_hess,
        minimizer,
        torch.zeros_like(minimizer),
        fixed=minimizer <= 0,
        simplex=True,
        value=value,
        max_iter=20,
    )
    assert evaluated == []
    assert int(iterations) == 1
    torch.testing.assert_close(v, minimizer, atol=1e-9, rtol=0)
