"""Nash-MTL: the bargaining equation G alpha = 1 / alpha, warm starts, clipping, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from scipy.optimize import root

from multiloss.balancing import NashMTL
from multiloss.balancing.nashmtl import nash_weights
from tests.balancing.gradients import jacobians, random_jacobian


@settings(max_examples=60, deadline=None)
@given(g=jacobians(min_rows=2, max_rows=5))
def test_solves_the_bargaining_equation(g: torch.Tensor) -> None:
    # On the Gram matrix as it is, as the official code's constraint
    # -log(alpha_i N) - log((G / N alpha)_i) <= 0 has it (N its normalization factor).
    assume(g.shape[1] >= g.shape[0])
    singular = torch.linalg.svdvals(g)
    assume(float(singular[-1]) > 1e-2 * float(singular[0]))
    gram = g @ g.T
    alpha, iterations = nash_weights(gram, max_iter=100)
    assert (alpha > 0).all()
    torch.testing.assert_close(alpha * (gram @ alpha), torch.ones_like(alpha), rtol=1e-6, atol=0)
    assert int(iterations) < 100


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])
def test_the_update_has_norm_sqrt_t_whatever_the_gradients_scale(scale: float) -> None:
    # alpha^T G alpha = sum_i alpha_i (G alpha)_i = T: the bargaining solution's update is
    # scale-free (the paper's Sec. 3; the official code then clips it to max_norm).
    g = random_jacobian(3, 6, 5) * scale
    alpha, _ = nash_weights(g @ g.T)
    update = alpha @ g
    assert float(update.norm()) == pytest.approx(3**0.5, rel=1e-6)
    unit, _ = nash_weights((g / scale) @ (g / scale).T)
    torch.testing.assert_close(alpha * scale, unit, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tasks", [2, 3, 5])
def test_a_zero_gradient_gets_weight_0_and_the_others_the_solution_without_it(
    tasks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multiloss.balancing import _linalg

    g = random_jacobian(tasks, 7, 3)
    g[0] = 0
    for host in (True, False):  # two losses on floats, or the general code (accelerators)
        monkeypatch.setattr(_linalg, "HOST_SOLVES", host)
        alpha, _ = nash_weights(g @ g.T)
        assert float(alpha[0]) == 0.0
        rest, _ = nash_weights(g[1:] @ g[1:].T)
        torch.testing.assert_close(alpha[1:], rest, rtol=1e-6, atol=0)
    assert nash_weights(torch.zeros(tasks, tasks))[0].abs().sum() == 0


def test_agrees_with_scipy_root_finding() -> None:
    # scipy on K = G / ||G||_F from ones (the official normalization and start; on G itself
    # it finds a root with a negative entry), rescaled: G's solution is K's / sqrt(||G||_F).
    g = random_jacobian(4, 6, 11)
    gram = (g @ g.T).numpy()
    norm = np.linalg.norm(gram)
    solved = root(lambda a: gram / norm @ a - 1 / a, np.ones(4), tol=1e-14).x
    alpha, _ = nash_weights(g @ g.T)
    np.testing.assert_allclose(alpha.numpy(), solved / np.sqrt(norm), rtol=1e-7)


def test_orthogonal_gradients_by_hand() -> None:
    g = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    alpha, iterations = nash_weights(g @ g.T)
    torch.testing.assert_close(alpha, 1 / g.diagonal(), rtol=1e-7, atol=0)
    assert int(iterations) == 0  # the cold start 1 / sqrt(diag G) is the solution here


def test_gradients_of_very_different_norms_converge_within_the_budget() -> None:
    # Divided by its Frobenius norm (the official scaling), the small row's diagonal entry is
    # about 1e-12, the ridge's size, and from ones more than 20 iterations were needed (with
    # a residual of 0.25 left). On the cosines, a few, to the exact solution.
    g = random_jacobian(3, 6, 8) * torch.tensor([[1e-3], [1.0], [1e3]], dtype=torch.float64)
    gram = g @ g.T
    alpha, iterations = nash_weights(gram)
    assert int(iterations) < 20
    torch.testing.assert_close(alpha * (gram @ alpha), torch.ones(3, dtype=torch.float64))


def test_warm_start_from_the_solution_takes_no_iteration() -> None:
    g = random_jacobian(3, 5, 2)
    alpha, first = nash_weights(g @ g.T, max_iter=50)
    again, second = nash_weights(g @ g.T, alpha, max_iter=50)
    assert int(first) > 0
    assert int(second) == 0
    torch.testing.assert_close(again, alpha)


def test_iteration_budget_is_the_official_20() -> None:
    g = random_jacobian(6, 8, 4)
    _, iterations = nash_weights(g @ g.T)
    assert 0 < int(iterations) <= 20


def test_bad_warm_start_is_replaced_and_degenerate_input_stays_finite() -> None:
    g = random_jacobian(3, 5, 2)
    start = torch.tensor([float("nan"), -1.0, 2.0], dtype=torch.float64)
    alpha, _ = nash_weights(g @ g.T, start, max_iter=50)
    torch.testing.assert_close(alpha, nash_weights(g @ g.T, max_iter=50)[0], rtol=1e-6, atol=0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    alpha, _ = nash_weights(opposite @ opposite.T)
    assert torch.isfinite(alpha).all()
    assert (alpha > 0).all()


def _losses(scale: float) -> tuple[torch.nn.Parameter, dict[str, torch.Tensor]]:
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    rows = torch.tensor([[1.0, 0.2], [0.0, 2.0]]) * scale
    return w, {"a": w @ rows[0], "b": w @ rows[1]}


def test_balancer_clips_the_shared_update_and_keeps_its_warm_start() -> None:
    balancer = NashMTL(max_norm=1.0)
    w, losses = _losses(100.0)
    balancer.backward(losses, diagnostics=True)
    assert float(w.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    assert balancer.alpha.shape == (2,)
    state = balancer.state_dict()
    assert "alpha" in state
    assert "iterations" in state
    assert 0 < int(balancer.diagnostics()["balance/nashmtl/iterations"]) <= 20
    w, losses = _losses(100.0)
    balancer.backward(losses, diagnostics=True)
    # Warm start: the stored float32 weights are one Newton step from the float64 solution.
    assert int(balancer.diagnostics()["balance/nashmtl/iterations"]) <= 1


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_no_clipping_below_max_norm_or_when_disabled(scale: float) -> None:
    g = torch.tensor([[1.0, 0.2], [0.0, 2.0]]) * scale
    for max_norm in (2.0, 0.0):  # the update's norm is sqrt(2) at any scale
        w, losses = _losses(scale)
        used = NashMTL(max_norm=max_norm).backward(losses)
        torch.testing.assert_close(w.grad, torch.tensor([used["a"], used["b"]]) @ g)
        assert float(w.grad.norm()) == pytest.approx(2**0.5, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_norm": -1.0}, ValueError, "`max_norm` of NashMTL must be >= 0.0; got -1.0"),
        ({"max_iter": 0}, ValueError, "`max_iter` of NashMTL must be >= 1; got 0"),
        ({"tol": -1e-9}, ValueError, "`tol` of NashMTL must be > 0.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        NashMTL(**kwargs)


def test_repr_shows_hyperparameters() -> None:
    assert repr(NashMTL()) == "NashMTL(max_norm=1.0)"
    assert repr(NashMTL(max_iter=5)) == "NashMTL(max_norm=1.0, max_iter=5)"


@pytest.mark.parametrize("start", [None, (0.5, 3.0), (float("nan"), -1.0)])
@pytest.mark.parametrize("seed", range(6))
def test_two_losses_take_the_same_newton_steps_on_floats(
    start: tuple[float, float] | None, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two losses on the host iterate on Python floats; the iterates, hence the weights and
    # the iteration count, are those of the general code.
    from multiloss.balancing import _linalg

    g = random_jacobian(2, 5, seed, shared=0.4 * seed - 1.0).float()
    gram = g @ g.T
    warm = None if start is None else torch.tensor(start)
    alpha, iterations = nash_weights(gram, warm)
    monkeypatch.setattr(_linalg, "HOST_SOLVES", False)
    general, general_iterations = nash_weights(gram, warm)
    torch.testing.assert_close(alpha, general, rtol=1e-6, atol=0)
    assert int(iterations) == int(general_iterations)
