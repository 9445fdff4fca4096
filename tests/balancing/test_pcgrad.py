"""PCGrad: checked against the paper's Algorithm 1 run on explicit gradient vectors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.balancing import PCGrad
from multiloss.balancing.pcgrad import pcgrad_weights, random_orders
from tests.balancing.gradients import jacobians


def naive_pcgrad(g: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 of the paper, literally, on the gradient vectors themselves."""
    projected = []
    for i in range(g.shape[0]):
        gi = g[i].clone()
        for j in orders[i].tolist():
            inner = gi @ g[j]
            if inner < 0:
                gi = gi - inner / (g[j] @ g[j]) * g[j]
        projected.append(gi)
    return torch.stack(projected).sum(dim=0)


def test_two_conflicting_gradients_by_hand() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    # g1.g2 = -1: g1 -> g1 + g2 / 2 = (0.5, 0.5); g2 -> g2 + g1 = (0, 1); sum (0.5, 1.5).
    weights = pcgrad_weights(g @ g.T)
    torch.testing.assert_close(weights, torch.tensor([2.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(weights @ g, torch.tensor([0.5, 1.5], dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(g=jacobians(min_rows=1, max_rows=5), seed=st.integers(0, 2**16))
def test_matches_algorithm_1_on_the_vectors(g: torch.Tensor, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    orders = random_orders(g.shape[0], g.device, generator)
    weights = pcgrad_weights(g @ g.T, orders)
    torch.testing.assert_close(weights @ g, naive_pcgrad(g, orders), atol=1e-9, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(g=jacobians(max_rows=5))
def test_no_conflict_is_the_plain_sum(g: torch.Tensor) -> None:
    g = g.abs()  # non-negative entries: every inner product is >= 0
    torch.testing.assert_close(pcgrad_weights(g @ g.T), torch.ones(g.shape[0], dtype=g.dtype))


@settings(max_examples=40, deadline=None)
@given(g=jacobians(min_rows=2, max_rows=2))
def test_two_losses_never_conflict_after_surgery(g: torch.Tensor) -> None:
    """With two losses each projected gradient is orthogonal to, or agrees with, the other."""
    orders = random_orders(2, g.device)
    update_rows = torch.eye(2, dtype=g.dtype)
    weights = pcgrad_weights(g @ g.T, orders)
    inner = g[0] @ g[1]
    if inner < 0:
        scale = torch.stack([-inner / (g[1] @ g[1]), -inner / (g[0] @ g[0])])
        update_rows = update_rows + torch.diag(scale).flip(1)
    torch.testing.assert_close(weights, update_rows.sum(dim=0))
    for i, j in ((0, 1), (1, 0)):
        assert (update_rows[i] @ g) @ g[j] >= -1e-9 * float(g.norm() ** 2)


def test_random_orders_are_permutations_of_the_others() -> None:
    orders = random_orders(5, torch.device("cpu"))
    for i, row in enumerate(orders.tolist()):
        assert sorted(row) == [j for j in range(5) if j != i]


def test_order_is_random_and_seedable() -> None:
    torch.manual_seed(3)
    first = random_orders(6, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, random_orders(6, torch.device("cpu")))
    assert not all(torch.equal(first, random_orders(6, torch.device("cpu"))) for _ in range(5))


def test_zero_gradient_stays_finite() -> None:
    g = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.5]])
    weights = pcgrad_weights(g @ g.T)
    assert torch.isfinite(weights).all()


def test_balancer_writes_the_projected_sum_on_shared_parameters() -> None:
    trunk = torch.nn.Linear(3, 4)
    heads = torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in range(3))
    x = torch.randn(8, 3)
    z = trunk(x)
    losses = {f"t{i}": (head(z) - 10.0 * i).pow(2).mean() for i, head in enumerate(heads)}
    names = sorted(losses)
    shared = list(trunk.parameters())
    rows = [
        torch.cat([g.flatten() for g in torch.autograd.grad(losses[n], shared, retain_graph=True)])
        for n in names
    ]
    g = torch.stack(rows).double()
    head_grads = [
        torch.autograd.grad(losses[n], list(heads[i].parameters()), retain_graph=True)
        for i, n in enumerate(names)
    ]
    torch.manual_seed(0)
    orders = random_orders(3, torch.device("cpu"))
    torch.manual_seed(0)
    PCGrad().backward(losses)
    got = torch.cat([p.grad.flatten() for p in shared]).double()
    torch.testing.assert_close(got, naive_pcgrad(g, orders), rtol=1e-4, atol=1e-5)
    for head, expected in zip(heads, head_grads, strict=True):  # heads: ordinary gradients
        for p, e in zip(head.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, e)


def test_bad_gram_is_named() -> None:
    with pytest.raises(ValueError, match=r"`gram` of PCGrad must be a square \(T, T\) matrix"):
        pcgrad_weights(torch.ones(2, 3))


def test_bad_level_is_named() -> None:
    with pytest.raises(ValueError, match="`level` of PCGrad must be one of"):
        PCGrad(level="heads")  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(PCGrad(level="representation")) == "PCGrad(level='representation')"
