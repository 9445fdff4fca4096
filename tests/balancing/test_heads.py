"""The heads' gradients from the per-loss passes at the representation (``_heads``).

The reference is the same balancer running every head again in its final pass, as it does when
the losses reach the trunk around the representation (``heads_above`` patched to find nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import multiloss.balancing as mb
from multiloss.balancing import context as context_module
from multiloss.balancing._heads import heads_above
from tests.balancing.properties import assert_grads_close, grads

METHODS = ["UPGrad", "MGDA", "PCGrad", "CAGrad", "IMTL", "NashMTL", "AlignedMTL"]


class Deep(nn.Module):
    """A trunk, three two-layer heads on its output ``z``, and two fixed losses (one on ``z``,
    one on the heads' weights); ``hidden_passes`` counts the gradients through each head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12))
        self.first = nn.ModuleList(nn.Linear(12, 7) for _ in range(3))
        self.last = nn.ModuleList(nn.Linear(7, 1) for _ in range(3))
        self.x = torch.randn(10, 5)
        self.y = torch.randn(10, 3) * torch.tensor([1.0, 10.0, 0.1])
        self.hidden_passes = [0, 0, 0]

    def losses(self, fixed: bool = True) -> dict[str, Tensor]:
        z = self.trunk(self.x)
        self.z = z
        losses: dict[str, Tensor] = {}
        for k, (first, last) in enumerate(zip(self.first, self.last, strict=True)):
            hidden = torch.relu(first(z))
            hidden.register_hook(
                lambda g, k=k: self.hidden_passes.__setitem__(k, 1 + self.hidden_passes[k])
            )  # type: ignore[func-returns-value]
            losses[f"t{k}"] = (last(hidden).squeeze(1) - self.y[:, k]).pow(2).mean()
        if fixed:
            losses["reg"] = z.pow(2).mean()
            losses["decay"] = sum(p.pow(2).sum() for p in self.last.parameters())  # type: ignore[assignment]
        return losses


def _step(
    make: Callable[[], mb.Balancer],
    monkeypatch: pytest.MonkeyPatch,
    *,
    heads: bool,
    **apply: object,
) -> tuple[dict[str, Tensor], dict[str, float], list[int]]:
    with monkeypatch.context() as patch:
        if not heads:
            patch.setattr(context_module, "heads_above", lambda *a: ())
        model = Deep()
        balancer = make()
        used: dict[str, float] = {}
        for step in range(2):  # the second step with the first one's state (Nash-MTL's)
            model.zero_grad(set_to_none=True)
            model.hidden_passes = [0, 0, 0]
            found = balancer.apply(model.losses(), step=step, representation=model.z, **apply)  # type: ignore[arg-type]
            used = {k: float(v) for k, v in found.items()}
            balancer.after_optimizer_step()
        return grads(model), used, model.hidden_passes


@pytest.mark.parametrize("method", METHODS)
def test_each_head_runs_once_and_the_update_is_the_same(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def make() -> mb.Balancer:
        return getattr(mb, method)(level="representation", balance="t*")

    weights = {"t1": -0.5, "reg": 0.1}
    grads_a, used_a, passes_a = _step(make, monkeypatch, heads=True, weights=weights)
    grads_b, used_b, passes_b = _step(make, monkeypatch, heads=False, weights=weights)
    assert passes_a == [1, 1, 1]  # the per-loss pass only
    assert passes_b == [2, 2, 2]  # the per-loss pass, then the final one
    assert_grads_close(grads_a, grads_b, rtol=1e-5, atol=1e-7)
    assert used_a == pytest.approx(used_b, rel=1e-6)


@pytest.mark.parametrize(
    "apply",
    [{"scale": 0.25}, {"scale": torch.tensor(8.0)}, {"diagnostics": True}],
    ids=["float-scale", "tensor-scale", "diagnostics"],
)
def test_scales_and_diagnostics(apply: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    def make() -> mb.Balancer:
        return mb.UPGrad(level="representation", balance="t*")

    grads_a, used_a, passes_a = _step(make, monkeypatch, heads=True, **apply)
    grads_b, used_b, passes_b = _step(make, monkeypatch, heads=False, **apply)
    # One pass fewer through each head (the diagnostics' own per-loss passes run in both).
    assert [b - a for a, b in zip(passes_a, passes_b, strict=True)] == [1, 1, 1]
    assert_grads_close(grads_a, grads_b, rtol=1e-5, atol=1e-7)
    assert used_a == pytest.approx(used_b, rel=1e-6)


def test_a_hook_on_the_representation_acts_on_the_update_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[Tensor]] = [[], []]
    for index, heads in enumerate((True, False)):
        with monkeypatch.context() as patch:
            if not heads:
                patch.setattr(context_module, "heads_above", lambda *a: ())
            model = Deep()
            losses = model.losses()
            model.z.register_hook(lambda g, out=seen[index]: out.append(g.clone()) or 2 * g)  # type: ignore[func-returns-value]
            mb.MGDA(level="representation", balance="t*").apply(losses, representation=model.z)
            seen[index].append(model.trunk[0].weight.grad.clone())  # type: ignore[union-attr]
    assert len(seen[0]) == len(seen[1]) == 2  # the hook ran once on each route
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-5, atol=1e-7)


def test_what_is_above_the_representation() -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Linear(3, 4), [nn.Sequential(nn.Linear(4, 2), nn.Tanh()) for _ in range(2)]
    z = trunk(torch.randn(5, 3))
    losses = [head(z).sum() for head in heads]
    above = heads_above(losses, z)
    assert {id(t) for t in above} == {id(p) for head in heads for p in head.parameters()}
    # A loss that reaches the trunk around z, or a weight tied between a head and the trunk.
    assert heads_above([losses[0], trunk.bias.sum()], z) == ()
    tied = torch.tanh(z @ trunk.weight).sum()  # trunk.weight is 4 x 3: used above z as well
    assert heads_above([losses[0], tied], z) == ()
    assert heads_above(losses, z.detach().requires_grad_()) == ()  # z a leaf


def test_a_watched_head_or_a_tied_weight_keeps_the_final_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = Deep()
    model.last[1].weight.register_post_accumulate_grad_hook(lambda p: None)
    passes: list[tuple[Tensor, ...]] = []
    real = context_module._Session.take_heads
    monkeypatch.setattr(
        context_module._Session,
        "take_heads",
        lambda self, z: passes.append(real(self, z)) or passes[-1],
    )
    mb.UPGrad(level="representation", balance="t*").apply(model.losses(), representation=model.z)
    assert passes == [()]
    assert model.hidden_passes == [2, 2, 2]
    assert model.last[1].weight.grad is not None
