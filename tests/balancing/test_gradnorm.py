"""GradNorm against Algorithm 1 of the paper, with G_i taken by double backprop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from multiloss.balancing import BalanceContext, GradNorm
from tests.balancing.properties import Toy


def _reference_weight_grad(
    model: Toy, weights: torch.Tensor, initial: torch.Tensor, alpha: float
) -> torch.Tensor:
    """grad_w of sum_i |G_i - mean(G) r_i^alpha| with G_i = ||grad_W w_i L_i|| (create_graph)."""
    w = weights.clone().requires_grad_(True)
    losses = model.losses()
    layer = model.trunk[2].weight
    norms = []
    for i, name in enumerate(sorted(losses)):
        (g,) = torch.autograd.grad(w[i] * losses[name], layer, create_graph=True)
        norms.append(g.norm())
    G = torch.stack(norms)
    values = torch.stack([losses[n].detach() for n in sorted(losses)])
    relative = values / initial
    target = (G.mean() * (relative / relative.mean()) ** alpha).detach()
    (grad,) = torch.autograd.grad((G - target).abs().sum(), w)
    return grad


def test_weight_gradient_matches_algorithm_1() -> None:
    model = Toy()
    balancer = GradNorm(alpha=1.5)
    balancer.apply(model.losses(), step=0)  # records L(0)
    initial = balancer.initial.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    optimizer.zero_grad()
    model.losses()["task2"].backward()
    optimizer.step()  # move the model so L(t) != L(0)
    with torch.no_grad():
        balancer.weights.copy_(torch.tensor([0.5, 1.5, 1.0]))
    balancer.weights.grad = None
    balancer.apply(model.losses(), step=1)
    expected = _reference_weight_grad(model, torch.tensor([0.5, 1.5, 1.0]), initial, 1.5)
    torch.testing.assert_close(balancer.weights.grad, expected)


def test_weights_are_renormalized_to_the_number_of_losses() -> None:
    model = Toy()
    balancer = GradNorm()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(5):
        optimizer.zero_grad()
        balancer.apply(model.losses(), step=step)
        balancer.add_parameters_to(optimizer)
        optimizer.param_groups[-1]["lr"] = 0.5
        optimizer.step()
        balancer.after_optimizer_step()
        assert float(balancer.weights.detach().sum()) == pytest.approx(3.0)
        assert (balancer.weights > 0).all()
    assert not torch.allclose(balancer.weights, torch.ones(3))


def _weighted_norms(model: Toy, weights: torch.Tensor) -> torch.Tensor:
    losses = model.losses()
    layer = model.trunk[2].weight
    return torch.stack(
        [
            weights[i] * torch.autograd.grad(losses[n], layer, retain_graph=True)[0].norm()
            for i, n in enumerate(sorted(losses))
        ]
    )


def test_the_weights_equalize_gradient_norms() -> None:
    """With alpha = 0 the fixed point is equal G_i: the weights move the norms together."""
    model = Toy(tasks=2)  # losses 100x apart
    balancer = GradNorm(alpha=0.0)
    before = _weighted_norms(model, torch.ones(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # freeze the model
    for step in range(100):
        optimizer.zero_grad()
        balancer.apply(model.losses(), step=step)
        balancer.add_parameters_to(optimizer)
        optimizer.param_groups[-1]["lr"] = 0.03
        optimizer.step()
        balancer.after_optimizer_step()
    after = _weighted_norms(model, balancer.weights.detach())
    assert float(before.max() / before.min()) > 3
    assert float(after.max() / after.min()) < 1.2


def test_explicit_layer_and_bad_layer() -> None:
    model = Toy()
    balancer = GradNorm(layer=model.trunk[0])
    assert list(balancer.parameters()) == []  # the layer's parameters are not adopted
    balancer.apply(model.losses(), step=0)
    assert balancer.weights.grad is not None
    with pytest.raises(ValueError, match="`layer` of GradNorm must be 'last', 'representation'"):
        GradNorm(layer="first")
    with pytest.raises(ValueError, match="`layer` of GradNorm has no parameter"):
        GradNorm(layer=torch.nn.ReLU())


def test_repr() -> None:
    assert repr(GradNorm()) == "GradNorm(alpha=1.5, layer='last')"


@pytest.mark.parametrize("layer", ["last", "representation"])
def test_the_host_arithmetic_matches_the_tensor_code(
    layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the CPU the per-step arithmetic runs on Python floats; accelerators run the tensor
    # code. The same weights, their gradient and L(0), step after step, the model moving.
    def run(host: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        with monkeypatch.context() as patch:
            if not host:
                patch.setattr(GradNorm, "_on_host", lambda self: False)
            torch.manual_seed(0)
            model = Toy()
            balancer = GradNorm(layer=layer)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            seen = []
            for step in range(6):
                optimizer.zero_grad()
                balancer.apply(model.losses(), step=step, representation=model.z)
                balancer.add_parameters_to(optimizer)
                optimizer.param_groups[-1]["lr"] = 0.5
                assert balancer.weights.grad is not None
                seen += [balancer.weights.detach().clone(), balancer.weights.grad.clone()]
                optimizer.step()
                balancer.after_optimizer_step()
            state = balancer.state_dict()
            return seen, {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}

    host_seen, host_state = run(host=True)
    tensor_seen, tensor_state = run(host=False)
    assert not torch.allclose(host_seen[0], host_seen[-2])  # the weights did move
    torch.testing.assert_close(host_seen, tensor_seen, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(host_state, tensor_state, rtol=1e-5, atol=1e-6)


def test_the_last_layer_is_factored_for_two_losses_and_gives_the_dense_norms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two losses, batch 4 below the width 8: the norms alone make factoring pay.
    from multiloss.balancing import context

    found: list[int] = []
    real = context.find_factored
    monkeypatch.setattr(
        context, "find_factored", lambda *a, **k: found.append(len(real(*a, **k))) or real(*a, **k)
    )
    results = []
    for factored in (True, False):
        torch.manual_seed(0)
        model = Toy(tasks=2)
        model.x = model.x[:4]
        model.y = model.y[:4]
        balancer = GradNorm().use_factored_gradients(factored)
        balancer.apply(model.losses(), step=0)
        assert balancer.weights.grad is not None
        results.append(balancer.weights.grad.clone())
    assert found == [1]  # the factored run found the last layer (the dense one never asks)
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["last", "representation"])
def test_the_logs_show_each_norm_and_its_target(layer: str) -> None:
    model = Toy()
    balancer = GradNorm(layer=layer)
    assert "balance/gradnorm/norm/task0" not in balancer.diagnostics()  # nothing measured yet
    balancer.apply(model.losses(), step=0, representation=model.z)
    logged = balancer.diagnostics()
    names = sorted(model.losses())
    norms = torch.stack([logged[f"balance/gradnorm/norm/{n}"] for n in names])  # type: ignore[misc]
    targets = torch.stack([logged[f"balance/gradnorm/target/{n}"] for n in names])  # type: ignore[misc]
    losses = model.losses()
    tensor = model.trunk[2].weight if layer == "last" else model.z
    expected = torch.stack(
        [torch.autograd.grad(losses[n], tensor, retain_graph=True)[0].norm() for n in names]
    )
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-7)
    # At the first step every relative rate is 1: the target is the mean of G_i = w_i n_i.
    torch.testing.assert_close(targets, expected.mean().expand(3), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("layer", "missing"),
    [
        (lambda model: torch.nn.Linear(2, 2), r"\['task0', 'task1', 'task2'\]"),  # unrelated
        (lambda model: model.heads[0], r"\['task1', 'task2'\]"),  # reached by task0 only
    ],
    ids=["unrelated", "one-head"],
)
def test_a_layer_some_losses_do_not_reach_is_named_at_the_first_call(
    layer: Callable[[Toy], torch.nn.Module], missing: str
) -> None:
    model = Toy()
    balancer = GradNorm(layer=layer(model))
    with pytest.raises(
        ValueError, match=rf"`layer` of GradNorm .* is not reached by the balanced losses {missing}"
    ):
        balancer.apply(model.losses(), step=0)
    assert not bool(balancer.started)  # raised before L(0) was recorded
    assert all(p.grad is None for p in model.parameters())


def test_a_given_layer_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Toy()
    balancer = GradNorm(layer=model.trunk[2])
    calls: list[int] = []
    real = BalanceContext.names_not_reaching
    monkeypatch.setattr(
        BalanceContext,
        "names_not_reaching",
        lambda self, tensors: calls.append(1) or real(self, tensors),
    )
    for step in range(3):
        balancer.apply(model.losses(), step=step)
        balancer.after_optimizer_step()
    assert calls == [1]
    assert min(balancer._measured["norm"]) > 0


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            5,
            r"`layer` of GradNorm must be 'last', 'representation', an nn.Module or a list of "
            r"parameters; got 5 \(int\)",
        ),
        (
            [1],
            r"`layer` of GradNorm, given as a list, must hold parameters \(tensors\); item 0 "
            r"is 1 \(int\)",
        ),
        ({"w": 1}, r"`layer` of GradNorm must be .* got \{'w': 1\} \(dict\)"),
    ],
)
def test_a_layer_of_the_wrong_type_is_named(layer: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        GradNorm(layer=layer)  # type: ignore[arg-type]
