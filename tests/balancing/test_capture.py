"""Gradient norms at the representation read from the ordinary backward pass (``_capture``).

The reference is the same balancer taking the norms from the per-loss Jacobian, as it does when
the heads cannot be told apart (``find_capture`` patched to find nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from multiloss.balancing import Balancer, GradNorm, Normalize, Plan, Scheduled
from multiloss.balancing import _capture as capture_module
from multiloss.balancing import context as context_module
from multiloss.balancing._capture import NormCapture, find_capture
from multiloss.balancing._walk import edges_into
from tests.balancing.properties import Toy, assert_grads_close, grads


class Heads(nn.Module):
    """A trunk and per-task heads of several shapes, with an optional fixed loss."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.trunk = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12))
        self.linear = nn.ModuleList(nn.Linear(12, 1) for _ in range(3))
        self.deep = nn.ModuleList(
            nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 1)) for _ in range(3)
        )
        self.x = torch.randn(10, 5)
        self.y = torch.randn(10, 3) * torch.tensor([1.0, 10.0, 0.1])

    def losses(self) -> dict[str, Tensor]:
        z = self.trunk(self.x)
        self.z = z
        if self.kind == "linear":
            outs = [head(z).squeeze(1) for head in self.linear]
        elif self.kind == "deep":  # non-linear heads: one read of z each, any operation
            outs = [head(z).squeeze(1) for head in self.deep]
        else:  # "twice": a loss reads z at two operations (a head, and z itself)
            outs = [head(z).squeeze(1) for head in self.linear]
            outs[1] = outs[1] + (z * z).mean(dim=1)
        losses = {f"t{i}": (out - self.y[:, i]).pow(2).mean() for i, out in enumerate(outs)}
        if self.kind != "deep":
            losses["reg"] = z.pow(2).mean()  # a fixed loss on z, through its own operation
            losses["decay"] = sum(p.pow(2).sum() for p in self.linear.parameters())  # type: ignore[assignment]
        return losses


def _found_or_fail(*args: object) -> NormCapture:
    found = find_capture(*args)  # type: ignore[arg-type]
    assert found is not None
    return found


def _both(
    make: Callable[[], Balancer],
    model: nn.Module,
    monkeypatch: pytest.MonkeyPatch,
    *,
    steps: int = 4,
    **apply: object,
) -> list[tuple[dict[str, Tensor], dict[str, float]]]:
    """Per step, (every gradient incl. the balancer's, the weights used): from the backward
    pass, then from the Jacobian."""
    results = []
    for capture in (True, False):
        with monkeypatch.context() as patch:
            if capture:  # and check that the heads were told apart, not silently skipped
                patch.setattr(context_module, "find_capture", _found_or_fail)
            else:
                patch.setattr(context_module, "find_capture", lambda *a: None)
            torch.manual_seed(0)
            balancer = make()
            state = {k: v.clone() for k, v in model.state_dict().items()}
            steps_out = []
            for step in range(steps):
                model.zero_grad(set_to_none=True)
                balancer.zero_grad(set_to_none=True)
                losses = model.losses()  # type: ignore[operator]
                used = balancer.apply(
                    losses,
                    step=step,
                    representation=model.z,
                    **apply,  # type: ignore[arg-type]
                )
                found = grads(model)
                found.update({f"balancer.{k}": v for k, v in grads(balancer).items()})
                steps_out.append((found, {k: float(v) for k, v in used.items()}))
                with torch.no_grad():  # move the model and the balancer, as an optimizer would
                    for rate, module in ((0.02, model), (0.1, balancer)):
                        for p in module.parameters():
                            if p.grad is not None:
                                p.sub_(rate * p.grad)
                balancer.after_optimizer_step()
            model.load_state_dict(state)
            results.append(steps_out)
    return [pair for pairs in zip(*results, strict=True) for pair in pairs]


def _assert_same(pairs: list[tuple[dict[str, Tensor], dict[str, float]]]) -> None:
    learned = False
    for (grads_a, used_a), (grads_b, used_b) in zip(pairs[::2], pairs[1::2], strict=True):
        own = [v for k, v in grads_a.items() if k.startswith("balancer.")]
        learned = learned or any(v.abs().sum() > 0 for v in own)
        assert_grads_close(grads_a, grads_b, rtol=1e-4, atol=1e-6)
        assert used_a == pytest.approx(used_b, rel=1e-6)
    assert learned  # GradNorm's weights got a gradient (not only the model)


GRADNORMS: dict[str, Callable[[], Balancer]] = {
    "plain": lambda: GradNorm(layer="representation", balance="t*"),
    "normalized": lambda: Normalize(GradNorm(layer="representation"), balance="t*"),
    "ramped": lambda: Scheduled(GradNorm(layer="representation"), warmup=4, balance="t*"),
}


@pytest.mark.parametrize("kind", ["linear", "deep", "twice"])
@pytest.mark.parametrize("make", GRADNORMS.values(), ids=GRADNORMS.keys())
def test_the_backward_pass_gives_what_the_jacobian_gives(
    kind: str, make: Callable[[], Balancer], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Heads(kind)
    weights = {"t1": -0.5, "reg": 0.1} if kind != "deep" else {"t1": -0.5}
    _assert_same(_both(make, model, monkeypatch, weights=weights))


@pytest.mark.parametrize("scale", [0.25, torch.tensor(8.0)], ids=["float", "tensor"])
def test_the_scale_is_divided_out(scale: float | Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_same(_both(GRADNORMS["plain"], Heads("linear"), monkeypatch, scale=scale))


def test_no_per_loss_pass_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[int] = []
    real = context_module.gradients_at
    monkeypatch.setattr(
        context_module, "gradients_at", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    model = Toy()
    losses = model.losses()
    heads = edges_into(list(losses.values()), model.z)
    assert heads is not None
    assert sorted(heads.values()) == [0, 1, 2]  # type: ignore[type-var]
    balancer = GradNorm(layer="representation")
    balancer.apply(losses, representation=model.z)
    assert passes == []
    assert balancer.weights.grad is not None
    assert balancer.weights.grad.abs().sum() > 0


def test_a_head_shared_by_two_losses_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    trunk, head = nn.Linear(4, 6), nn.Linear(6, 2)
    z = trunk(torch.randn(8, 4))
    joint = head(z)  # one operation reads z for both losses
    assert find_capture([joint[:, 0].pow(2).mean(), joint[:, 1].abs().mean()], [], z) is None
    assert find_capture([joint[:, 0].mean()], [joint[:, 1].mean()], z) is None  # a fixed one
    # A fixed loss with its own read of z does not get in the way.
    apart = [head(z)[:, 0].mean(), head(z)[:, 1].mean()]
    assert find_capture(apart, [z.pow(2).mean()], z) is not None
    # GradNorm then takes the norms from one per-loss pass.
    passes: list[int] = []
    real = context_module.gradients_at
    monkeypatch.setattr(
        context_module, "gradients_at", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    balancer = GradNorm(layer="representation")
    losses = {"a": joint[:, 0].pow(2).mean(), "b": joint[:, 1].abs().mean()}
    balancer.apply(losses, representation=z)
    assert passes == [1]
    assert balancer.weights.grad is not None
    assert balancer.weights.grad.abs().sum() > 0


def test_a_zero_weight_reads_zero_and_the_hooks_last_one_pass() -> None:
    torch.manual_seed(0)
    z = nn.Linear(3, 4)(torch.randn(5, 3))
    heads = [nn.Linear(4, 1) for _ in range(2)]
    losses = [head(z).pow(2).mean() for head in heads]
    capture = find_capture(losses, [], z)
    assert isinstance(capture, NormCapture)
    with pytest.raises(RuntimeError, match="asked for before it ran"):
        capture.norms()
    coefficients = torch.tensor([0.0, 2.0])
    with capture.armed(coefficients, 0.5):
        (losses[0] * 0.0 + losses[1] * 2.0 * 0.5).backward(retain_graph=True)
    norms = capture.norms()
    (own,) = torch.autograd.grad(losses[1], z, retain_graph=True)
    torch.testing.assert_close(norms, torch.stack([torch.tensor(0.0), own.norm()]))
    (losses[0] + losses[1]).backward()  # after the pass: nothing is read any more
    assert [len(parts) for parts in capture._parts] == [1, 1]
    assert capture.norms() is norms


def test_a_function_extra_needs_a_loss_weighting_plan() -> None:
    with pytest.raises(ValueError, match="only a loss-weighting plan"):
        Plan(loss_weights=torch.ones(2), shared_update=torch.ones(2), extra=lambda: None)


@pytest.mark.parametrize("scale", [1.0, 0.5, torch.tensor(4.0)], ids=["one", "float", "tensor"])
def test_the_float_finish_matches_the_tensor_one(
    scale: float | Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    z = nn.Linear(3, 4)(torch.randn(5, 3))
    heads = [nn.Linear(4, 1) for _ in range(3)]
    losses = [head(z).pow(2).mean() + (k == 1) * (z * z).mean() for k, head in enumerate(heads)]
    coefficients = torch.tensor([0.0, -2.0, 0.5])
    found = []
    for host in (True, False):
        monkeypatch.setattr(capture_module, "_on_host", lambda *a, host=host: host)
        capture = find_capture(losses, [], z)
        assert capture is not None
        with capture.armed(coefficients, scale):
            total = sum(c * loss for c, loss in zip(coefficients, losses, strict=True))
            (total * scale).backward(retain_graph=True)  # type: ignore[union-attr]
        found.append(capture.norms())
    own = [torch.autograd.grad(loss, z, retain_graph=True)[0].norm() for loss in losses[1:]]
    expected = torch.stack([torch.tensor(0.0), *own])
    torch.testing.assert_close(found[0], expected)
    torch.testing.assert_close(found[1], expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Heads("linear").to(dtype)
    model.x, model.y = model.x.to(dtype), model.y.to(dtype)
    pairs = _both(GRADNORMS["plain"], model, monkeypatch, steps=2, weights={"t1": -0.5})
    tolerance = {"rtol": 2e-2, "atol": 1e-3} if dtype == torch.bfloat16 else {}
    for (grads_a, used_a), (grads_b, used_b) in zip(pairs[::2], pairs[1::2], strict=True):
        assert all(v.dtype == dtype for k, v in grads_a.items() if not k.startswith("balancer."))
        assert_grads_close(grads_a, grads_b, **tolerance)
        assert used_a == pytest.approx(used_b, rel=tolerance.get("rtol", 1e-6))


def test_a_representation_the_losses_do_not_come_from_is_an_error() -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 6), [nn.Linear(6, 1) for _ in range(2)]
    x = torch.randn(8, 4)
    z = trunk(x)
    features = trunk(x)  # the losses come from a second evaluation, not from z
    losses = {f"t{k}": head(features).pow(2).mean() for k, head in enumerate(heads)}
    with pytest.raises(ValueError, match="no balanced loss is computed from the representation"):
        GradNorm(layer="representation").apply(losses, representation=z)


def test_a_balanced_loss_not_computed_from_the_representation_is_named() -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 6), [nn.Linear(6, 1) for _ in range(3)]
    x = torch.randn(8, 4)
    z = trunk(x)
    losses = {f"t{k}": head(z).pow(2).mean() for k, head in enumerate(heads)}
    losses["t2"] = heads[2](trunk(x)).pow(2).mean()  # a second evaluation: not from z
    with pytest.raises(
        ValueError,
        match=r"but some balanced losses are not computed from the representation \(shape "
        r"\(8, 6\)\): the graph of \['t2'\] never passes through it",
    ):
        GradNorm(layer="representation").apply(losses, representation=z)


def test_fixed_losses_along_a_deep_trunk_are_walked_once() -> None:
    # One fixed loss per block (a regularizer, an MoE balance term): walked as one owner, the
    # trunk is walked once for all of them, and a read of z shared by fixed losses only is
    # not a reason to give up.
    torch.manual_seed(0)
    blocks = [nn.Linear(6, 6) for _ in range(60)]
    h = torch.randn(4, 6)
    fixed = []
    for block in blocks:
        h = h + torch.tanh(block(h))
        fixed.append(h.pow(2).mean())
    z = h
    squared = z.pow(2)
    fixed += [squared.mean(), squared.sum()]
    heads = [nn.Linear(6, 1) for _ in range(2)]
    balanced = [head(z).pow(2).mean() for head in heads]
    capture = find_capture(balanced, fixed, z)
    assert isinstance(capture, NormCapture)
    assert sorted(row for uses in capture._nodes.values() for _, row in uses) == [0, 1]
