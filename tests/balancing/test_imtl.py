"""IMTL-G: against the paper's closed form on the gradient vectors, and its defining property."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings

from multiloss.balancing import IMTL
from multiloss.balancing.imtl import imtl_weights
from tests.balancing.gradients import jacobians


def paper_closed_form(g: torch.Tensor) -> torch.Tensor:
    """alpha_{2:T} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum(alpha_{2:T}) (Liu et al. 2021)."""
    u = g / g.norm(dim=1, keepdim=True)
    d_matrix = g[0] - g[1:]
    u_matrix = u[0] - u[1:]
    rest = g[0] @ u_matrix.T @ torch.linalg.inv(d_matrix @ u_matrix.T)
    return torch.cat([(1 - rest.sum()).reshape(1), rest])


@settings(max_examples=80, deadline=None)
@given(g=jacobians(min_rows=2, max_rows=4, max_cols=6))
def test_matches_the_paper_closed_form(g: torch.Tensor) -> None:
    assume(g.shape[1] >= g.shape[0])
    singular = torch.linalg.svdvals(g)
    assume(float(singular[-1]) > 1e-2 * float(singular[0]))  # well-posed: independent rows
    expected = paper_closed_form(g)
    got = imtl_weights(g @ g.T)
    torch.testing.assert_close(got @ g, expected @ g, rtol=1e-6, atol=1e-7 * float(g.norm()))


@settings(max_examples=60, deadline=None)
@given(g=jacobians(min_rows=2, max_rows=4))
def test_projections_on_every_direction_are_equal(g: torch.Tensor) -> None:
    assume(bool((g.norm(dim=1) > 0).all()))
    singular = torch.linalg.svdvals(g)
    assume(g.shape[1] >= g.shape[0] and float(singular[-1]) > 1e-2 * float(singular[0]))
    alpha = imtl_weights(g @ g.T)
    assert float(alpha.sum()) == pytest.approx(1.0)
    projections = (g / g.norm(dim=1, keepdim=True)) @ (alpha @ g)
    torch.testing.assert_close(
        projections, projections[0].expand_as(projections), rtol=1e-5, atol=1e-9
    )


def test_orthogonal_gradients_by_hand() -> None:
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # d = (2 a, b) with a + b = 1 and 2 a = b: a = 1/3.
    torch.testing.assert_close(imtl_weights(g @ g.T), torch.tensor([1 / 3, 2 / 3]))


def test_degenerate_gradients_stay_finite() -> None:
    opposite = torch.tensor([[1.0, 2.0], [-2.0, -4.0]])
    torch.testing.assert_close(imtl_weights(opposite @ opposite.T), torch.tensor([2 / 3, 1 / 3]))
    with_zero = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    assert torch.isfinite(imtl_weights(with_zero @ with_zero.T)).all()
    assert torch.isfinite(imtl_weights(torch.zeros(3, 3))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tasks", [2, 3, 5])
def test_a_zero_gradient_gets_weight_0_and_the_others_imtl_of_the_rest(
    tasks: int, dtype: torch.dtype
) -> None:
    # A loss weighted 0 this step has a zero gradient. Its norm was read after the repair
    # shift of the singular Gram matrix (sqrt(T eps)), and through G^-1 it took nearly all
    # the weight: the update shrank to about 1e-3 of IMTL-G's on the other gradients.
    g = torch.randn(tasks, 7, generator=torch.Generator().manual_seed(tasks), dtype=dtype)
    g[1] = 0
    alpha = imtl_weights(g @ g.T)
    rest = [k for k in range(tasks) if k != 1]
    assert float(alpha[1]) == 0.0
    expected = imtl_weights(g[rest] @ g[rest].T) if len(rest) > 1 else torch.ones(1, dtype=dtype)
    torch.testing.assert_close(alpha[rest], expected, rtol=1e-5, atol=1e-7)


def test_a_loss_weighted_0_leaves_the_update_of_the_others() -> None:
    rows = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    p = torch.nn.Parameter(torch.zeros(7))
    IMTL().backward({f"l{k}": rows[k] @ p for k in range(3)}, shared=[p], weights={"l1": 0.0})
    q = torch.nn.Parameter(torch.zeros(7))
    IMTL().backward({"l0": rows[0] @ q, "l2": rows[2] @ q}, shared=[q])
    torch.testing.assert_close(p.grad, q.grad)


def test_weights_may_be_negative() -> None:
    # g3 is nearly g1 + g2: equal projections need a negative weight on it.
    g = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.1]])
    alpha = imtl_weights(g @ g.T)
    assert float(alpha[2]) < 0
    projections = (g / g.norm(dim=1, keepdim=True)) @ (alpha @ g)
    torch.testing.assert_close(projections, projections[0].expand(3))


def test_repr() -> None:
    assert repr(IMTL()) == "IMTL()"
