"""Linear layers found in the graph, and factored Jacobians that give the dense update."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import multiloss.balancing.context as context
from multiloss.balancing import (
    MGDA,
    Balancer,
    GradNorm,
    Normalize,
    PCGrad,
    UPGrad,
)
from multiloss.balancing._factored import (
    factored_targets,
    find_factored,
    find_factored_input,
    worth_factoring,
)
from multiloss.balancing._jacobian import Target, gradients_at
from multiloss.balancing.shared import discover
from tests.balancing.properties import Wide


def _found(losses: list[Tensor], tensors: list[Tensor]) -> dict[int, object]:
    return find_factored(discover(losses), tensors, rows=len(losses))


def _two_losses(h: Tensor) -> list[Tensor]:
    return [h.pow(2).mean(), h.sin().sum()]


def test_a_wide_linear_layer_on_a_small_batch_is_factored_with_its_input() -> None:
    layer = nn.Linear(32, 32)
    x = torch.randn(4, 32)
    found = _found(_two_losses(layer(x)), [layer.weight, layer.bias])
    assert list(found) == [id(layer.weight)]  # the bias stays a dense block
    weight = found[id(layer.weight)]
    assert weight.transposed
    assert weight.examples == 4
    torch.testing.assert_close(weight.uses[0].inputs, x)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda x, w: x @ w.T, id="no-bias"),
        pytest.param(lambda x, w: (x.reshape(2, 2, 32) @ w.T).reshape(4, 32), id="3d-input"),
        pytest.param(lambda x, w: x @ w.T + (x.flip(0) @ w.t()), id="applied-twice"),
        pytest.param(lambda x, w: x @ w.transpose(0, 1), id="transpose"),
        pytest.param(lambda x, w: nn.functional.linear(x, w.to(torch.float64).float()), id="casts"),
    ],
)
def test_every_use_of_a_linear_weight_is_found(build: Callable[[Tensor, Tensor], Tensor]) -> None:
    w = nn.Parameter(torch.randn(32, 32))
    x = torch.randn(4, 32)
    found = _found(_two_losses(build(x, w)), [w])
    assert id(w) in found


def test_a_weight_used_as_is_keeps_its_orientation() -> None:
    w = nn.Parameter(torch.randn(32, 24))  # in x out: y = x @ w
    found = _found(_two_losses(torch.randn(4, 32) @ w), [w])
    assert not found[id(w)].transposed  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda x, w: x @ w.T + w.sum(), id="also-summed"),
        pytest.param(lambda x, w: w @ x.T.repeat(1, 1), id="left-operand"),
        pytest.param(lambda x, w: nn.functional.embedding(torch.tensor([0, 1]), w), id="embedding"),
    ],
)
def test_a_weight_with_another_use_stays_dense(build: Callable[[Tensor, Tensor], Tensor]) -> None:
    w = nn.Parameter(torch.randn(32, 32))
    x = torch.randn(4, 32)
    assert _found(_two_losses(build(x, w)), [w]) == {}


def test_a_layer_on_a_large_batch_stays_dense() -> None:
    layer = nn.Linear(32, 32)
    assert _found(_two_losses(layer(torch.randn(256, 32))), [layer.weight]) == {}


def test_worth_factoring_follows_the_multiply_add_count() -> None:
    # Measured on the 3x512 benchmark trunk (batch 256): factored 0.78x of dense at T = 8,
    # 0.91x at T = 4, 1.08x at T = 2 (dense kept); batch 512: 1.09-1.33x (dense kept).
    assert worth_factoring(8, 256, 512, 512)
    assert worth_factoring(4, 256, 512, 512)
    assert not worth_factoring(2, 256, 512, 512)
    assert not any(worth_factoring(t, 512, 512, 512) for t in (2, 4, 8))
    # Rows read only for their norms (GradNorm's last layer) skip the final dY^T X: two rows
    # on a batch of 256 then pay (measured: GradNorm() 1.37x instead of 1.45x of the plain
    # sum at T = 2), a batch of 512 still does not.
    assert worth_factoring(2, 256, 512, 512, update=False)
    assert not worth_factoring(2, 512, 512, 512, update=False)


def _step(
    balancer: Balancer, *, scale: float = 1.0, diagnostics: bool = False
) -> tuple[dict[str, float], dict[str, Tensor], dict[str, float]]:
    model = Wide()
    losses = model.losses()
    losses["aux"] = model.trunk[2].bias.pow(2).sum() * 1e-3  # a fixed loss on the trunk
    torch.manual_seed(1)  # PCGrad's random order
    used = balancer.apply(losses, {"aux": 1.0}, step=0, scale=scale, diagnostics=diagnostics)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    found = {k: float(v) for k, v in balancer.diagnostics().items() if k.startswith("grad/")}
    return {k: float(v) for k, v in used.items()}, grads, found


BALANCERS = [
    pytest.param(lambda: UPGrad(balance="t*"), id="UPGrad"),
    pytest.param(lambda: MGDA(balance="t*"), id="MGDA"),
    pytest.param(lambda: Normalize(PCGrad(), balance="t*"), id="Normalize-PCGrad"),
    pytest.param(lambda: GradNorm(balance="t*"), id="GradNorm-last-layer"),
]


@pytest.mark.parametrize("make", BALANCERS)
@pytest.mark.parametrize("batched", [False, True], ids=["loop", "batched"])
def test_the_factored_update_is_the_dense_update(
    make: Callable[[], Balancer], batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    factored_layers: list[int] = []
    real = context.find_factored

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real(*args, **kwargs)
        factored_layers.append(len(found))
        return found

    monkeypatch.setattr(context, "find_factored", spy)
    factored = make()
    dense = copy.deepcopy(factored).use_factored_gradients(False)
    for balancer in (factored, dense):
        balancer._engine.batched = batched
    used_f, grads_f, diag_f = _step(factored, scale=64.0, diagnostics=True)
    if batched:  # the batched engine forms every row (see test_a_hook_on_a_layer_output_...)
        assert factored_layers == []
    else:
        assert factored_layers  # the wide layer, and only it
        assert all(n == 1 for n in factored_layers)
    calls = len(factored_layers)
    used_d, grads_d, diag_d = _step(dense, scale=64.0, diagnostics=True)
    assert len(factored_layers) == calls  # the dense balancer never looks
    assert used_f.keys() == used_d.keys()
    for name in used_f:
        assert used_f[name] == pytest.approx(used_d[name], rel=1e-4, abs=1e-6)
    assert grads_f.keys() == grads_d.keys()
    for name in grads_f:
        torch.testing.assert_close(grads_f[name], grads_d[name], rtol=1e-4, atol=1e-6)
    assert diag_f.keys() == diag_d.keys()
    assert diag_f
    for key in diag_f:
        assert diag_f[key] == pytest.approx(diag_d[key], rel=1e-3, abs=1e-5), key


def _hooked_step(
    factored: bool, hook: Callable[[Wide], None], level: str = "parameters"
) -> tuple[dict[str, float], dict[str, Tensor]]:
    model = Wide()
    hook(model)
    losses = model.losses()
    balancer = UPGrad(level=level).use_factored_gradients(factored)  # type: ignore[arg-type]
    used = balancer.apply(losses, step=0, representation=model.z)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v) for k, v in used.items()}, grads


def _reverse_the_wide_layer_output(model: Wide) -> None:
    def reverse(module: nn.Module, args: object, out: Tensor) -> None:
        out.register_hook(lambda g: -g)

    model.trunk[2].register_forward_hook(reverse)


@pytest.mark.parametrize(
    ("hook", "level", "stays_factored"),
    [
        pytest.param(
            lambda m: m.trunk[2].weight.register_hook(lambda g: g * (g.abs() > 0.01)),
            "parameters",
            False,
            id="weight-hook",
        ),
        pytest.param(_reverse_the_wide_layer_output, "parameters", True, id="output-hook"),
    ],
)
def test_gradient_hooks_are_honoured(
    hook: Callable[[Wide], None], level: str, stays_factored: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hook on a weight keeps it dense (its rows never pass through the hook); a hook on a
    # layer's output (gradient reversal) is read through the node's pre-hook, after it.
    found: list[int] = []
    real = context.find_factored
    monkeypatch.setattr(
        context, "find_factored", lambda *a, **k: found.append(len(real(*a, **k))) or real(*a, **k)
    )
    used_f, grads_f = _hooked_step(True, hook, level)
    assert (found == [1]) is stays_factored
    used_d, grads_d = _hooked_step(False, hook, level)
    assert used_f == pytest.approx(used_d, rel=1e-4, abs=1e-6)
    for name in grads_f:
        torch.testing.assert_close(grads_f[name], grads_d[name], rtol=1e-4, atol=1e-6)


def test_use_factored_gradients_reaches_inner_balancers_and_survives_copies() -> None:
    outer = Normalize(UPGrad()).use_factored_gradients(False)
    engines = [m._engine for m in outer.modules() if isinstance(m, Balancer)]
    assert len(engines) == 2
    assert not any(e.factor_linear for e in engines)
    assert not copy.deepcopy(outer)._engine.factor_linear
    with pytest.raises(TypeError, match=r"`enabled` of UPGrad.use_factored_gradients.*'yes'"):
        UPGrad().use_factored_gradients("yes")  # type: ignore[arg-type]


def test_under_autocast_the_factored_update_is_the_dense_one_to_bf16_precision() -> None:
    # Autocast casts the weight (ToCopyBackward0 on its path) and saves bf16 inputs; the
    # factored block reduces them in float32, the dense path forms bf16 weight gradients.
    updates = []
    for factored in (True, False):
        model = Wide()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model.losses()
        weight = model.trunk[2].weight
        assert id(weight) in _found(list(losses.values()), [weight])
        UPGrad().use_factored_gradients(factored).apply(losses, step=0)
        updates.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in updates[0]:
        torch.testing.assert_close(updates[0][name], updates[1][name], rtol=2e-2, atol=1e-3)


def _heads(z: Tensor, count: int = 3) -> list[Tensor]:
    torch.manual_seed(3)
    return [nn.Linear(z.shape[1], 1)(z).pow(2).mean() for _ in range(count)]


def test_a_representation_read_by_linear_heads_is_factored() -> None:
    z = torch.tanh(nn.Linear(3, 16)(torch.randn(5, 3)))
    found = find_factored_input(_heads(z), z)
    assert found is not None
    assert tuple(found.weights.shape) == (3, 16)  # the three heads' weights, stacked
    assert [use.out_features for use in found.uses] == [1, 1, 1]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(lambda z: z.pow(2).mean(), id="another-use"),
        pytest.param(lambda z: nn.Linear(16, 16)(z).sum(), id="heads-as-wide-as-z"),
    ],
)
def test_a_representation_with_another_reader_stays_dense(
    extra: Callable[[Tensor], Tensor],
) -> None:
    z = torch.tanh(nn.Linear(3, 16)(torch.randn(5, 3)))
    assert find_factored_input([*_heads(z), extra(z)], z) is None


def test_only_the_representation_s_own_output_is_followed() -> None:
    # z and its sibling come out of one operation (chunk): the sibling's readers are not z's.
    h = nn.Linear(3, 32)(torch.randn(5, 3))
    z, sibling = h.chunk(2, dim=1)
    losses = [*_heads(z, 2), sibling.pow(2).sum()]
    found = find_factored_input(losses, z)
    assert found is not None
    assert len(found.uses) == 2


def test_a_leaf_or_3d_representation_stays_dense() -> None:
    leaf = torch.randn(5, 16, requires_grad=True)
    assert find_factored_input(_heads(leaf), leaf) is None
    z3 = torch.tanh(nn.Linear(3, 16)(torch.randn(2, 5, 3)))
    heads = [nn.Linear(16, 1)(z3).sum() for _ in range(2)]
    assert find_factored_input(heads, z3) is None


def test_each_head_records_the_one_loss_that_reads_it() -> None:
    z = torch.tanh(nn.Linear(3, 16)(torch.randn(5, 3)))
    found = find_factored_input(_heads(z), z)
    assert found is not None
    assert [use.owner for use in found.uses] == [0, 1, 2]
    torch.manual_seed(4)
    shared_head, own_head = nn.Linear(16, 1), nn.Linear(16, 1)
    y = shared_head(z)
    losses = [y.pow(2).mean(), y.sin().mean() + own_head(z).mean()]
    found = find_factored_input(losses, z)
    assert found is not None
    assert [use.owner for use in found.uses] == [None, 1]  # shared_head: both losses read it


def _owned_targets(losses: list[Tensor], z: Tensor, owned: bool) -> list[Target]:
    found = find_factored_input(losses, z)
    assert found is not None
    targets, _ = factored_targets([z], {id(z): found})
    return targets if owned else [target._replace(owner=None) for target in targets]


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_owned_heads_take_one_backward_pass_with_the_loop_s_rows(
    scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    z = torch.tanh(nn.Linear(3, 16)(torch.randn(5, 3)))
    losses = _heads(z, 4)
    losses[1] = losses[1].detach()  # a loss without a graph: a zero row either way
    torch.manual_seed(5)
    head = nn.Linear(16, 1)
    y = head(z)
    y.register_hook(lambda g: -3 * g)  # a hook on a head's output is honoured in both
    losses[2] = y.pow(2).mean()
    calls: list[int] = []
    real = torch.autograd.grad

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    rows = {}
    for owned in (True, False):
        calls.clear()
        targets = _owned_targets(losses, z, owned)
        rows[owned], _ = gradients_at(
            losses, targets, retain_graph=True, grad_scale=scale, batched=False
        )
        rows[owned] = [block.clone() for block in rows[owned]]
        assert len(calls) == (1 if owned else 3)  # the loop skips the loss without a graph
    for one_pass, loop in zip(rows[True], rows[False], strict=True):
        torch.testing.assert_close(one_pass, loop)
    assert len(rows[True]) == 3  # the detached loss's head is not in the graph
    assert all(block[1].abs().sum() == 0 for block in rows[True])  # its row is zero


def test_a_head_read_by_two_losses_gives_the_dense_update() -> None:
    updates = []
    for factored in (True, False):
        torch.manual_seed(6)
        trunk, shared_head, own_head = nn.Linear(3, 16), nn.Linear(16, 1), nn.Linear(16, 1)
        z = torch.tanh(trunk(torch.randn(5, 3)))
        y = shared_head(z)
        losses = {"a": y.pow(2).mean(), "b": y.sin().mean() + own_head(z).pow(2).mean()}
        balancer = UPGrad(level="representation").use_factored_gradients(factored)
        balancer.apply(losses, step=0, representation=z)
        updates.append([p.grad.clone() for p in trunk.parameters()])
    for factored_grad, dense_grad in zip(*updates, strict=True):
        torch.testing.assert_close(factored_grad, dense_grad, rtol=1e-4, atol=1e-6)


def _representation_step(factored: bool, factor: float | None) -> tuple[Wide, bool]:
    model = Wide()
    calls: list[bool] = []
    real = context.find_factored_input

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real(*args, **kwargs)
        calls.append(found is not None)
        return found

    losses = model.losses()
    if factor is not None:
        model.z.register_hook(lambda g: factor * g)
    balancer = UPGrad(level="representation").use_factored_gradients(factored)
    context.find_factored_input = spy
    try:
        balancer.apply(losses, step=0, representation=model.z)
    finally:
        context.find_factored_input = real
    return model, any(calls)


@pytest.mark.parametrize("factor", [-1.0, 3.0])
@pytest.mark.parametrize("factored", [True, False], ids=["factored", "dense"])
def test_a_hook_on_the_representation_acts_once_on_the_update(
    factor: float, factored: bool
) -> None:
    # The method balances the losses' own gradients at z; the hook then transforms what
    # flows into the trunk, as it does for Sum's gradient: trunk gradients scale by `factor`.
    plain, _ = _representation_step(factored, None)
    hooked, was_factored = _representation_step(factored, factor)
    assert was_factored is factored
    for (name, p), q in zip(plain.named_parameters(), hooked.parameters(), strict=True):
        expected = p.grad * factor if name.startswith("trunk") else p.grad
        torch.testing.assert_close(q.grad, expected, rtol=1e-5, atol=1e-6)
