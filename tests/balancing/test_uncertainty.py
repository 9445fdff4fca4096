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


def test_the_host_arithmetic_matches_the_tensor_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # On the CPU the weights and the log-variance term's gradient are worked out on Python
    # floats; accelerators run the tensor code. Same weights, log-variance gradients, model
    # gradients, with Adam moving s between steps, a classification loss, a lower bound, a
    # maximized loss and a loss exactly at its bound. (On the host the term's gradient is
    # written in closed form: its value is never built.)
    generator = torch.Generator().manual_seed(0)
    series = 0.5 + 3.0 * torch.rand(6, 3, generator=generator)
    series[3, 2] = -1.0  # at the bound of "c"
    fixed = {"a": 1.0, "b": -2.0, "c": 0.5}

    def run(host: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with monkeypatch.context() as patch:
            if not host:
                patch.setattr(Uncertainty, "_on_host", lambda self, values: False)
            balancer = Uncertainty(classification=["a"], lower_bound={"c": -1.0})
            w = torch.nn.Parameter(torch.tensor(1.0))
            optimizer = None
            weights, grads_seen = [], []
            for row in series:
                w.grad = None
                used = balancer.backward(
                    {k: row[i] * w for i, k in enumerate("abc")}, weights=fixed
                )
                if optimizer is None:
                    optimizer = torch.optim.Adam([balancer.log_vars], lr=0.3)
                weights.append(torch.stack([torch.as_tensor(used[k]) for k in "abc"]))
                grads_seen.append(torch.cat([w.grad.reshape(1), balancer.log_vars.grad]))
                optimizer.step()
                optimizer.zero_grad()
            return weights, grads_seen

    host = run(host=True)
    tensor = run(host=False)
    torch.testing.assert_close(host[0], tensor[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(host[1], tensor[1], rtol=1e-5, atol=1e-6)


def test_init_first_on_the_host_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same start as the tensor code, and a gradient of s that is 0 up to rounding there
    # (not compared further: Adam turns two different roundings of 0 into full steps).
    def start(host: bool) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        with monkeypatch.context() as patch:
            if not host:
                patch.setattr(Uncertainty, "_on_host", lambda self, values: False)
            balancer = Uncertainty(classification=["a"], lower_bound={"b": -1.0}, init="first")
            w = torch.nn.Parameter(torch.tensor(1.0))
            used = balancer.backward({"a": 2.0 * w, "b": 3.0 * w})
            assert bool(balancer.started)
            return used, balancer.log_vars.detach().clone(), balancer.log_vars.grad.clone()

    host_used, host_s, host_grad = start(host=True)
    tensor_used, tensor_s, _ = start(host=False)
    assert host_used == pytest.approx(tensor_used, rel=1e-6)
    assert host_used == pytest.approx({"a": 0.25, "b": 0.125}, rel=1e-6)  # 0.5 / (L - bound)
    torch.testing.assert_close(host_s, tensor_s)
    assert host_grad.abs().max() < 1e-7


def test_a_watched_host_term_is_one_product_in_the_backward_pass() -> None:
    # With a hook on the log-variances their gradient goes through autograd (the hook must see
    # it): from the slopes worked out on floats, a single dot product.
    balancer = Uncertainty()
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer.backward({"a": 2.0 * w, "b": w})
    balancer.log_vars.register_hook(lambda grad: grad)
    ctx_values = torch.tensor([2.0, 1.0])

    class _Ctx:  # what extra_loss reads
        values = ctx_values
        weights = torch.tensor([1.0, 1.0])
        gradient_scale = 1.0

        def value_floats(self) -> list[float]:
            return ctx_values.tolist()

    term = balancer.extra_loss(_Ctx())  # type: ignore[arg-type]
    assert isinstance(term, torch.Tensor)
    nodes, stack = [], [term.grad_fn]
    while stack:  # every node of the term's graph
        node = stack.pop()
        nodes.append(node.name())
        stack.extend(child for child, _ in node.next_functions if child is not None)
    assert sorted(nodes) == ["DotBackward0", "torch::autograd::AccumulateGrad"]
    (slope,) = torch.autograd.grad(term, balancer.log_vars)
    expected = 0.5 - 0.5 * torch.exp(-balancer.log_vars.detach()) * ctx_values
    torch.testing.assert_close(slope, expected)


def test_an_overflowing_weight_is_inf_not_an_exception() -> None:
    balancer = Uncertainty(balance=["a", "b"])
    with torch.no_grad():
        balancer.log_vars.fill_(-1000.0)
    w = torch.nn.Parameter(torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="Uncertainty produced non-finite weights at step 0"):
        balancer.backward({"a": 2.0 * w, "b": w})


def test_classification_takes_one_name_or_a_list_of_names() -> None:
    assert Uncertainty(classification="task2").classification == ("task2",)
    assert Uncertainty(classification=["task2", "task0", "task2"]).classification == (
        "task0",
        "task2",
    )
    with pytest.raises(
        TypeError, match=r"`classification` of Uncertainty must hold loss names \(strings\); got 1"
    ):
        Uncertainty(classification=[1])  # type: ignore[list-item]
    with pytest.raises(
        TypeError, match=r"`classification` of Uncertainty must be a loss name or a list .* got 5"
    ):
        Uncertainty(classification=5)  # type: ignore[arg-type]
    model = Toy()
    used = Uncertainty(classification="task2").apply(model.losses(), step=0)
    assert float(used["task2"]) == 1.0  # the classification form: exp(-0)
    assert float(used["task0"]) == 0.5


def test_lower_bound_naming_an_unknown_loss_is_an_error_at_the_first_call() -> None:
    balancer = Uncertainty(lower_bound={"typo": 0.0, "task1": -1.0})
    with pytest.raises(
        ValueError,
        match=r"`lower_bound` of Uncertainty names \['typo'\] but the balanced losses are "
        r"\['task0', 'task1', 'task2'\]",
    ):
        balancer.apply(Toy().losses(), step=0)
    with pytest.raises(TypeError, match=r"`lower_bound` of Uncertainty, given as a mapping"):
        Uncertainty(lower_bound={1: 0.0})  # type: ignore[dict-item]
