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
            patch.setattr(context_module, "heads_above", lambda *a: None)
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
                patch.setattr(context_module, "heads_above", lambda *a: None)
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
    found = heads_above(losses, [], z)
    assert found is not None
    assert found.private
    assert {id(t) for t in found.leaves} == {id(p) for h in heads for p in h.parameters()}
    # A loss that reaches the trunk around z, or a weight tied between a head and the trunk.
    assert heads_above([losses[0], trunk.bias.sum()], [], z) is None
    tied = torch.tanh(z @ trunk.weight).sum()  # trunk.weight is 4 x 3: used above z as well
    assert heads_above([losses[0], tied], [], z) is None
    assert heads_above(losses, [], z.detach().requires_grad_()) is None  # z a leaf
    # Another output of the operation that made z is not z: its reader reaches the trunk.
    first, second = trunk(torch.randn(5, 3)).chunk(2, dim=1)
    assert heads_above([first.sum(), (first + second).sum()], [], first) is None
    # An operation above z read by two losses (or by a fixed one): found, not private.
    shared = nn.Linear(4, 2)(z)
    assert heads_above([shared[:, 0].sum(), shared[:, 1].sum()], [], z).private is False  # type: ignore[union-attr]
    out = heads[0](z)
    found = heads_above([out.sum(), losses[1]], [out.mean()], z)  # a fixed loss reads out too
    assert found is not None
    assert not found.private
    assert heads_above(losses, [heads[0](z).mean()], z).private  # type: ignore[union-attr]
    # A loss that is a leaf is its own parameter.
    p = nn.Parameter(torch.tensor(1.0))
    assert any(t is p for t in heads_above([losses[0], p], [], z).leaves)  # type: ignore[union-attr]


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
    assert passes == [((), False)]
    assert model.hidden_passes == [2, 2, 2]
    assert model.last[1].weight.grad is not None


class Shared(nn.Module):
    """Harder shapes: a layer above z shared by two losses, two offsets added to one loss
    (autograd hands them one gradient buffer), a fixed loss that is a parameter (a balanced
    one would not be computed from z: an error), and z one output of a chunk whose other
    output a fixed loss reads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(5, 16)
        self.common = nn.Linear(8, 8)  # above z, read by t0 and t1
        self.outs = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
        self.b1, self.b2 = nn.Parameter(torch.zeros(10, 8)), nn.Parameter(torch.zeros(10, 8))
        self.free = nn.Parameter(torch.tensor(0.5))
        self.x = torch.randn(10, 5)
        self.y = torch.randn(10, 3)

    def losses(self) -> dict[str, Tensor]:
        z, side = self.trunk(self.x).chunk(2, dim=1)
        self.z = z
        common = torch.tanh(self.common(z))
        t2 = torch.tanh(z + self.b1 + self.b2)
        return {
            "t0": (self.outs[0](common).squeeze(1) - self.y[:, 0]).pow(2).mean(),
            "t1": (self.outs[1](common).squeeze(1) - self.y[:, 1]).pow(2).mean(),
            "t2": (self.outs[2](t2).squeeze(1) - self.y[:, 2]).pow(2).mean(),
            "free": self.free * 1.0,
            "side": side.pow(2).mean(),
        }


class MethodHeads(mb.UPGrad):
    head_weights = "method"


@pytest.mark.parametrize("make", [mb.UPGrad, MethodHeads], ids=["fixed-heads", "method-heads"])
def test_shared_layers_offsets_a_leaf_loss_and_accumulation(
    make: Callable[..., mb.Balancer], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for heads in (True, False):
        with monkeypatch.context() as patch:
            if not heads:
                patch.setattr(context_module, "heads_above", lambda *a: None)
            model = Shared()
            balancer = make(level="representation", balance="t*")
            for _ in range(2):  # two micro-batches: the second adds to .grad
                balancer.apply(model.losses(), {"t1": -0.5, "side": 0.3}, representation=model.z)
            results.append(grads(model))
            assert model.b1.grad is not model.b2.grad  # never one tensor for two parameters
    assert_grads_close(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_the_heads_are_freed_during_the_call() -> None:
    model = Deep()
    losses = model.losses(fixed=False)
    hidden = torch.relu(model.first[0](model.z))  # a fresh read: not part of the losses
    mb.UPGrad(level="representation").apply(losses, representation=model.z)
    # Each per-loss pass freed its head: going through one again fails, as after any backward.
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(losses["t0"], model.last[0].weight)
    assert hidden.requires_grad
