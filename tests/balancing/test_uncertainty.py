"""Uncertainty weighting against Kendall et al.'s objective, written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from multiloss.balancing import Uncertainty
from tests.balancing.properties import Toy, grads


def test_gradients_equal_those_of_the_papers_objective() -> None:
    model = Toy()
    balancer = Uncertainty(classification=["task2"])
    balancer.apply(model.losses(), step=0)  # create the log-variances
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.3, -1.0, 2.0]))
    weights = {"task0": 1.0, "task1": 2.0, "task2": -1.0}
    model.zero_grad(set_to_none=True)
    balancer.log_vars.grad = None
    balancer.apply(model.losses(), weights, step=1)
    got, got_s = grads(model), balancer.log_vars.grad.clone()

    # Reference: the network descends sum w_i c_i exp(-s_i) L_i; s descends sum |w_i| (c_i
    # exp(-s_i) L_i + s_i / 2), with c = 1/2 (regression) or 1 (classification), eq. (7).
    model.zero_grad(set_to_none=True)
    s = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    losses = model.losses()
    c = {"task0": 0.5, "task1": 0.5, "task2": 1.0}
    network = sum(
        weights[n] * c[n] * math.exp(-float(s[i].detach())) * losses[n]
        for i, n in enumerate(sorted(c))
    )
    network.backward()
    objective = sum(
        abs(weights[n]) * (c[n] * torch.exp(-s[i]) * losses[n].detach() + 0.5 * s[i])
        for i, n in enumerate(sorted(c))
    )
    objective.backward()
    torch.testing.assert_close(got, grads(model))
    torch.testing.assert_close(got_s, s.grad)


def test_log_variances_settle_where_the_paper_says() -> None:
    """With constant losses, s* = log L (regression) and log(2 L) (classification)."""
    values = {"a": 0.2, "b": 30.0}
    balancer = Uncertainty(classification=["b"], balance=["a", "b"])
    optimizer = torch.optim.Adam(balancer.parameters(), lr=0.05)
    w = torch.nn.Parameter(torch.tensor(1.0))
    for _ in range(2000):
        optimizer.zero_grad()
        balancer.backward({name: w * value for name, value in values.items()})
        optimizer.step()
    torch.testing.assert_close(
        balancer.log_vars.detach(),
        torch.tensor([math.log(0.2), math.log(60.0)]),
        atol=1e-2,
        rtol=0,
    )


def test_lower_bound_shifts_the_log_variance_term_only() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Uncertainty(lower_bound={"nll": -4.0}, balance=["nll", "mse"])
    used = balancer.backward({"nll": -3.0 * w, "mse": 2.0 * w})
    assert used == {"mse": 0.5, "nll": 0.5}
    # d/ds of 0.5 (exp(-s) (L - b) + s) at s = 0: 0.5 (-(L - b) + 1)
    torch.testing.assert_close(balancer.log_vars.grad, torch.tensor([0.5 * (-2 + 1), 0.0]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"`classification` of Uncertainty names \['x'\]"):
        Uncertainty(classification=["x"], balance=["a", "b"])
    with pytest.raises(ValueError, match="`lr` of Uncertainty must be > 0"):
        Uncertainty(lr=0.0)
    with pytest.raises(ValueError, match=r"`lower_bound\['a'\]` of Uncertainty must be a finite"):
        Uncertainty(lower_bound={"a": float("nan")})


def test_repr() -> None:
    assert repr(Uncertainty(lr=0.025)) == "Uncertainty(lr=0.025)"


def test_init_first_starts_at_the_equilibrium() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Uncertainty(init="first", classification=["b"], balance=["a", "b"])
    used = balancer.backward({"a": 1e6 * w, "b": 3.0 * w})
    torch.testing.assert_close(
        balancer.log_vars.detach(), torch.tensor([math.log(1e6), math.log(6.0)])
    )
    assert used == pytest.approx({"a": 0.5 / 1e6, "b": 1.0 / 6.0})
    torch.testing.assert_close(balancer.log_vars.grad, torch.zeros(2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="`init` of Uncertainty must be a float or 'first'"):
        Uncertainty(init="zero")
