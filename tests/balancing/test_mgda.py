"""MGDA and MGDA-UB: normalizations of the official code, the representation level, errors."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing import MGDA
from multiloss.balancing.mgda import mgda_weights


def test_orthogonal_gradients_by_hand() -> None:
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    w, _ = mgda_weights(g @ g.T)  # 4 gamma^2 + (1 - gamma)^2 is minimal at gamma = 0.2
    torch.testing.assert_close(w, torch.tensor([0.2, 0.8]))


@pytest.mark.parametrize(
    ("normalization", "losses", "scales"),
    [
        ("l2", None, [2.0, 1.0]),  # ||g_i||
        ("loss", [1.0, 4.0], [1.0, 4.0]),  # loss value
        ("loss+", [1.0, 4.0], [2.0, 4.0]),  # loss value * ||g_i||
    ],
)
def test_normalizations_of_the_official_code(
    normalization: str, losses: list[float] | None, scales: list[float]
) -> None:
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    values = None if losses is None else torch.tensor(losses, dtype=torch.float64)
    w, _ = mgda_weights(g @ g.T, values, normalization=normalization)
    # Min-norm point of the segment between the normalized gradients a and b.
    a, b = g[0] / scales[0], g[1] / scales[1]
    gamma = (b - a) @ b / ((a - b) @ (a - b))
    torch.testing.assert_close(w, torch.stack([gamma, 1 - gamma]))


def test_non_positive_loss_poisons_the_loss_normalization() -> None:
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    w, _ = mgda_weights(g @ g.T, torch.tensor([1.0, -1.0]), normalization="loss")
    assert not torch.isfinite(w).all()


@pytest.mark.parametrize("value", [-1.0, 0.0])  # 0 would be divided by too
def test_non_positive_loss_with_loss_normalization_stops_with_a_clear_error(value: float) -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    losses = {"a": p.sum(), "b": (p - p.detach()).sum() + value}
    with pytest.raises(ValueError, match=r"MGDA needs every balanced loss to stay above its lower"):
        MGDA(normalization="loss+").backward(losses)


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_the_exact_solver_is_used_with_a_normalization_too(normalization: str) -> None:
    # It was ignored there: Frank-Wolfe ran, to its tolerance, whatever `solver` said.
    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    values = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    w, _ = mgda_weights(g @ g.T, values, normalization=normalization, solver="exact")
    scale = g.norm(dim=1) if normalization == "l2" else values
    if normalization == "loss+":
        scale = values * g.norm(dim=1)
    reference, _ = mgda_weights((g / scale[:, None]) @ (g / scale[:, None]).T, solver="exact")
    torch.testing.assert_close(w, reference, rtol=1e-9, atol=1e-12)


def test_loss_normalization_needs_the_losses() -> None:
    with pytest.raises(ValueError, match="`losses` are needed by MGDA's normalization 'loss'"):
        mgda_weights(torch.eye(2), normalization="loss")


def _model() -> tuple[torch.nn.Module, torch.nn.ModuleList, torch.Tensor]:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh())
    heads = torch.nn.ModuleList(torch.nn.Linear(5, 1) for _ in range(3))
    return trunk, heads, torch.randn(16, 4)


def test_mgda_ub_weights_come_from_the_representation_gradients() -> None:
    trunk, heads, x = _model()
    z = trunk(x)
    losses = {f"t{i}": (h(z).squeeze(1) - i).pow(2).mean() for i, h in enumerate(heads)}
    rows = torch.stack(
        [torch.autograd.grad(losses[n], z, retain_graph=True)[0].flatten() for n in sorted(losses)]
    )
    expected, _ = mgda_weights(rows @ rows.T)
    used = MGDA(level="representation").backward(losses, representation=z)
    torch.testing.assert_close(torch.tensor([used[n] for n in sorted(used)]), expected)
    # The trunk gets the gradient of the re-weighted sum (the paper's MGDA-UB update).
    got = [p.grad.clone() for p in trunk.parameters()]
    trunk.zero_grad()
    z = trunk(x)
    total = sum(
        float(expected[i]) * (h(z).squeeze(1) - i).pow(2).mean() for i, h in enumerate(heads)
    )
    reference = torch.autograd.grad(total, list(trunk.parameters()))
    for a, b in zip(got, reference, strict=True):
        torch.testing.assert_close(a, b)


def test_iterations_are_in_the_diagnostics() -> None:
    trunk, heads, x = _model()
    z = trunk(x)
    losses = {f"t{i}": (h(z).squeeze(1) - i).pow(2).mean() for i, h in enumerate(heads)}
    balancer = MGDA()
    balancer.backward(losses, diagnostics=True)
    iterations = balancer.diagnostics()["balance/mgda/iterations"]
    assert 0 <= int(iterations) <= 250


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"normalization": "norm"}, ValueError, r"`normalization` of MGDA must be one of \{'none'"),
        ({"solver": "cvxpy"}, ValueError, r"`solver` of MGDA must be one of \{'frank-wolfe'"),
        ({"max_iter": -1}, ValueError, "`max_iter` of MGDA must be >= 0; got -1"),
        ({"max_iter": 2.5}, TypeError, "`max_iter` of MGDA must be an int"),
        ({"tol": 0.0}, ValueError, r"`tol` of MGDA must be > 0.0; got 0.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MGDA(**kwargs)


def test_exact_and_frank_wolfe_agree_through_the_balancer() -> None:
    trunk, heads, x = _model()
    results = []
    for solver in ("frank-wolfe", "exact"):
        z = trunk(x)
        losses = {f"t{i}": (h(z).squeeze(1) - i).pow(2).mean() for i, h in enumerate(heads)}
        results.append(MGDA(solver=solver).backward(losses))
    assert results[0] == pytest.approx(results[1], abs=1e-3)


def test_repr_shows_hyperparameters() -> None:
    assert repr(MGDA(solver="exact")) == "MGDA(normalization='none', solver='exact')"
    assert repr(MGDA()) == "MGDA(normalization='none')"
    assert (
        repr(MGDA(normalization="loss+", level="representation"))
        == "MGDA(normalization='loss+', level='representation')"
    )


def test_mgda_ub_names_the_losses_an_unrelated_representation_does_not_reach() -> None:
    trunk = torch.nn.Linear(3, 4)
    heads = [torch.nn.Linear(4, 1) for _ in range(2)]
    h = trunk(torch.randn(8, 3))
    losses = {"a": heads[0](h).pow(2).mean(), "b": heads[1](h).pow(2).mean()}
    with pytest.raises(
        ValueError,
        match=r"the representation given to MGDA \(shape \(3,\)\) is not what the balanced "
        r"losses \['a', 'b'\] are computed from: their gradient at it is absent",
    ):
        MGDA(level="representation").backward(
            losses, representation=torch.randn(3, requires_grad=True)
        )
    assert all(p.grad is None for p in trunk.parameters())
