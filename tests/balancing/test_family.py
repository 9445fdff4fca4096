"""Properties shared by every balancer (cases come from ``tests/balancing/cases``)."""

from __future__ import annotations

import copy
import importlib
import pickle
import pkgutil
import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multiloss.balancing.context as context
from multiloss.balancing import GradientBalancer, GradNorm, Sum
from multiloss.balancing._blocks import RowsBlock
from tests.balancing import cases as case_modules
from tests.balancing.properties import (
    BalancerCase,
    Toy,
    Wide,
    assert_grads_close,
    grads,
    run,
    train,
)


def _all_cases() -> list[BalancerCase]:
    found: list[BalancerCase] = []
    for info in sorted(pkgutil.iter_modules(case_modules.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{case_modules.__name__}.{info.name}")
        found.extend(module.CASES)
    return found


CASES = _all_cases()


def cases(where: Callable[[BalancerCase], bool] = lambda case: True) -> pytest.MarkDecorator:
    """Parametrize over the cases a property applies to (no skipped checks)."""
    chosen = [case for case in CASES if where(case)]
    return pytest.mark.parametrize("case", chosen, ids=[case.id for case in chosen])


@cases()
def test_weights_and_gradients_are_finite(case: BalancerCase) -> None:
    model, balancer = Toy(), case.build()
    train(balancer, model, steps=4)
    used, g = run(balancer, model, step=4)
    assert set(used) == {"task0", "task1", "task2"}
    assert all(torch.isfinite(torch.tensor(v)) for v in used.values())
    assert all(torch.isfinite(t).all() for t in g.values())
    assert any(t.abs().sum() > 0 for t in g.values())


@cases()
def test_order_of_the_loss_dict_does_not_matter(case: BalancerCase) -> None:
    model = Toy()
    first = case.build()
    second = copy.deepcopy(first)
    used_a, grads_a = run(first, model)
    used_b, grads_b = run(second, model, reverse=True)
    assert used_a == pytest.approx(used_b)
    assert_grads_close(grads_a, grads_b)


@cases()
def test_state_dict_round_trip(case: BalancerCase) -> None:
    model = Toy()
    balancer = case.build()
    train(balancer, model, steps=3)
    clone = case.build()
    clone.load_state_dict(copy.deepcopy(balancer.state_dict()))
    for key, value in balancer.state_dict().items():
        restored = clone.state_dict()[key]
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(restored, value)
        else:
            assert restored == value
    used_a, grads_a = run(balancer, model, step=3)
    used_b, grads_b = run(clone, model, step=3)
    assert used_a == pytest.approx(used_b)
    assert_grads_close(grads_a, grads_b)


@cases(lambda case: case.nonnegative)
def test_multipliers_keep_the_sign_of_the_fixed_weight(case: BalancerCase) -> None:
    model, balancer = Toy(), case.build()
    weights = {"task0": 1.0, "task1": -0.5, "task2": 2.0}
    for step in range(3):
        used, _ = run(balancer, model, weights=weights, step=step)
        balancer.after_optimizer_step()
        for name, value in used.items():
            assert value * weights[name] >= 0.0, (name, value)


@cases()
def test_maximized_loss_is_pushed_up(case: BalancerCase) -> None:
    """A negative fixed weight maximizes: the head of that loss ascends its loss."""
    model, balancer = Toy(), case.build()
    used, g = run(balancer, model, weights={"task1": -1.0})
    assert torch.isfinite(torch.tensor(list(used.values()))).all()
    head = model.heads[1]
    before = model.losses()["task1"].detach()
    with torch.no_grad():
        for name, p in head.named_parameters():
            p -= 1e-4 * g[f"heads.1.{name}"]
    after = model.losses()["task1"].detach()
    if case.nonnegative and used["task1"] != 0.0:
        assert after > before


@cases(lambda case: case.reduces_to_sum)
def test_one_loss_reduces_to_sum(case: BalancerCase) -> None:
    model = Toy()
    used, g = run(case.build(), model, names=["task0"], weights={"task0": 0.7})
    ref_used, ref = run(Sum(), model, names=["task0"], weights={"task0": 0.7})
    assert used == pytest.approx(ref_used)
    assert_grads_close(g, ref)


@cases()
def test_balance_selects_and_adds_the_rest_at_fixed_weight(case: BalancerCase) -> None:
    model = Toy()
    weights = {"task0": 1.0, "task1": 1.0, "task2": 0.3}
    used, g = run(case.build(balance=["task0", "task1"]), model, weights=weights)
    assert used["task2"] == 0.3
    # Reference: the same method on the two balanced losses alone, plus 0.3 * grad task2.
    ref_used, ref = run(case.build(), model, names=["task0", "task1"])
    model.zero_grad(set_to_none=True)
    (0.3 * model.losses()["task2"]).backward()
    fixed = grads(model)
    assert {k: used[k] for k in ref_used} == pytest.approx(ref_used)
    assert_grads_close(g, {k: ref[k] + fixed[k] for k in ref})


@cases()
@pytest.mark.parametrize("kind", ["float", "tensor"])  # the AMP scaler passes a 0-dim tensor
def test_gradients_are_added_and_scaled(case: BalancerCase, kind: str) -> None:
    model = Toy()
    _, plain = run(case.build(), model)
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    losses = model.losses()
    torch.manual_seed(0)
    scale = 0.25 if kind == "float" else torch.tensor(0.25)
    case.build().apply(losses, step=0, scale=scale, representation=model.z)
    assert_grads_close(grads(model), {k: 1.0 + 0.25 * v for k, v in plain.items()})


_BAD_SCALES: list[tuple[object, type[Exception], str]] = [
    (float("nan"), ValueError, "must be a finite float > 0; got nan"),
    (-1.0, ValueError, "must be a finite float > 0; got -1.0"),
    (0, ValueError, "must be a finite float > 0; got 0.0"),
    (float("inf"), ValueError, "must be a finite float > 0; got inf"),
    (True, TypeError, "got True (bool)"),
    ("a", TypeError, "got 'a' (str)"),
    (torch.ones(3), ValueError, "0-dim floating-point tensor; got Tensor(shape=(3,)"),
    (torch.tensor(2), TypeError, "got a tensor of dtype torch.int64"),
    (torch.tensor(float("nan")), ValueError, "must be finite and > 0; got tensor(nan)"),
    (torch.tensor(-0.5), ValueError, "must be finite and > 0; got tensor(-0.5)"),
]


@cases()
def test_a_bad_scale_is_named_and_writes_nothing(case: BalancerCase) -> None:
    model, balancer = Toy(), case.build()
    name = type(balancer).__name__
    for scale, error, text in _BAD_SCALES:
        with pytest.raises(error, match=rf"`scale` of {name}\.apply .*{re.escape(text)}"):
            balancer.apply(model.losses(), step=0, scale=scale, representation=model.z)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"`scale` of {name}\.backward must be"):
        balancer.backward(model.losses(), scale=-2.0, representation=model.z)
    assert all(p.grad is None for p in model.parameters())


@cases()
def test_a_balanced_loss_without_graph_is_named_where_it_has_no_gradient(
    case: BalancerCase,
) -> None:
    """Methods that weigh per-loss gradients name a balanced loss without a graph; loss
    weighting weighs it like any other (a task without labels in this batch) and it
    contributes nothing to the update."""
    model, balancer = Toy(), case.build()
    name = type(balancer).__name__
    if not balancer._every_loss_needs_a_graph():
        losses = model.losses()
        losses["task1"] = losses["task1"].detach()
        used = balancer.apply(losses, step=0, representation=model.z)
        assert set(used) == {"task0", "task1", "task2"}
        assert model.trunk[0].weight.grad is not None
        assert model.heads[1].weight.grad is None  # nothing flowed from the constant
        return
    for constant in (model.losses()["task1"].detach(), torch.tensor(2.0)):
        losses = model.losses()
        losses["task1"] = constant
        with pytest.raises(
            ValueError,
            match=rf"balanced loss 'task1' of {name}\.apply has no graph \(requires_grad is "
            r"False\): it cannot be balanced; compute it without \.detach\(\)/no_grad, or leave "
            "it out of `balance=`",
        ):
            balancer.apply(losses, step=0, representation=model.z)
    assert all(p.grad is None for p in model.parameters())


@cases()
def test_a_fixed_loss_without_graph_is_added_as_before(case: BalancerCase) -> None:
    """A constant left out of ``balance=`` contributes nothing to the update, no error."""
    model = Toy()
    losses = model.losses()
    losses["task1"] = torch.tensor(2.0)
    torch.manual_seed(0)
    used = case.build(balance=["task0", "task2"]).apply(losses, step=0, representation=model.z)
    got = grads(model)
    ref_used, ref = run(case.build(), model, names=["task0", "task2"])
    assert used["task1"] == 1.0
    assert {k: float(used[k]) for k in ref_used} == pytest.approx(ref_used)
    assert_grads_close(got, ref)


def _own_grads(balancer: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in balancer.parameters()]


@cases()
@pytest.mark.parametrize(("bad", "value"), [("task1", float("nan")), ("task2", float("inf"))])
def test_a_non_finite_loss_is_named_and_changes_nothing(
    case: BalancerCase, bad: str, value: float
) -> None:
    """Balanced (task1) or fixed (task2): named before any state or gradient is written."""
    model, balancer = Toy(), case.build(balance=["task0", "task1"])
    train(balancer, model, steps=2)
    state = copy.deepcopy(balancer.state_dict())
    own = _own_grads(balancer)
    model.zero_grad(set_to_none=True)
    losses = model.losses()
    losses[bad] = losses[bad] * value
    name = type(balancer).__name__
    with pytest.raises(
        FloatingPointError,
        match=rf"^loss '{bad}' is {value} at step 2; {name} wrote no gradient and kept its state$",
    ):
        balancer.apply(losses, step=2, representation=model.z)
    assert all(p.grad is None for p in model.parameters())
    after = balancer.state_dict()
    assert after.keys() == state.keys()
    for key, value_before in state.items():
        if isinstance(value_before, torch.Tensor):
            torch.testing.assert_close(after[key], value_before, equal_nan=True)
        else:
            assert after[key] == value_before
    for now, before in zip(_own_grads(balancer), own, strict=True):
        assert (now is None and before is None) or torch.equal(now, before)  # type: ignore[arg-type]
    # The next finite step goes on as if the bad one never came.
    used, _ = run(balancer, model, step=2)
    assert all(torch.isfinite(torch.tensor(v)) for v in used.values())


def _at_representation(case: BalancerCase) -> bool:
    return any(
        getattr(module, "level", None) == "representation"
        or getattr(module, "layer", None) == "representation"
        for module in case.build().modules()
    )


@cases(_at_representation)
def test_a_representation_the_losses_are_not_computed_from_is_named(case: BalancerCase) -> None:
    model = Toy()
    unrelated = torch.randn(16, 8, requires_grad=True)
    with pytest.raises(ValueError, match=r"\['task0', 'task1', 'task2'\]"):
        case.build().apply(model.losses(), step=0, representation=unrelated)
    # Only task2 misses it: computed again from the trunk, not from the marked z.
    losses = model.losses()
    z = model.z
    losses["task2"] = model.heads[2](model.trunk(model.x)).pow(2).mean()
    with pytest.raises(ValueError, match=r"representation.* \['task2'\]"):
        case.build().apply(losses, step=0, representation=z)
    assert all(p.grad is None for p in model.parameters())


@cases()
def test_diagnostics_have_the_contract_keys(case: BalancerCase) -> None:
    model, balancer = Toy(), case.build()
    run(balancer, model, diagnostics=True)
    diagnostics = balancer.diagnostics()
    for name in ("task0", "task1", "task2"):
        assert f"grad/norm/{name}" in diagnostics
    assert "grad/cos/task0|task1" in diagnostics
    shares = [float(v) for k, v in diagnostics.items() if k.startswith("grad/share/")]
    if shares:
        assert sum(shares) == pytest.approx(1.0, abs=1e-4)
    assert all(k.startswith(("grad/", "balance/")) for k in diagnostics)


@cases()
def test_repr_names_the_method(case: BalancerCase) -> None:
    balancer = case.build()
    assert type(balancer).__name__ in repr(balancer)


@cases()
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    order=st.permutations(["task0", "task1", "task2"]),
    weights=st.lists(st.sampled_from([-1.0, 0.5, 1.0, 2.0]), min_size=3, max_size=3),
)
def test_any_order_and_weights_give_the_same_finite_update(
    case: BalancerCase, order: list[str], weights: list[float]
) -> None:
    fixed = dict(zip(["task0", "task1", "task2"], weights, strict=True))
    model = Toy()
    balancer = case.build()
    twin = copy.deepcopy(balancer)
    used_a, grads_a = run(balancer, model, weights=fixed)
    model.zero_grad(set_to_none=True)
    losses = model.losses()
    torch.manual_seed(0)
    used_b = twin.apply(
        {name: losses[name] for name in order},
        {name: fixed[name] for name in reversed(order)},
        step=0,
        representation=model.z,
    )
    assert all(torch.isfinite(torch.as_tensor(v)) for v in used_b.values())
    assert used_a == pytest.approx({k: float(v) for k, v in used_b.items()})
    assert_grads_close(grads_a, grads(model))


def _uses_a_jacobian(case: BalancerCase) -> bool:
    return any(isinstance(m, GradientBalancer | GradNorm) for m in case.build().modules())


@cases(_uses_a_jacobian)
def test_factored_linear_layers_give_the_dense_update(
    case: BalancerCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wide's second layer is kept factored (batch 4 < width 32), and so is its representation
    # (read by 4 linear heads): every method must give the update it gives from the rows.
    # (GradNorm would read its norms at the representation from the backward pass: here it
    # takes them from the Jacobian, the way it does when the heads are shared; test_capture
    # compares the two.)
    monkeypatch.setattr(context, "find_capture", lambda *a: None)
    found: list[int] = []
    real, real_input = context.find_factored, context.find_factored_input
    monkeypatch.setattr(
        context, "find_factored", lambda *a, **k: found.append(len(real(*a, **k))) or real(*a, **k)
    )
    monkeypatch.setattr(
        context,
        "find_factored_input",
        lambda *a: found.append(int(real_input(*a) is not None)) or real_input(*a),
    )
    updates = []
    for factored in (True, False):
        model, balancer = Wide(), case.build().use_factored_gradients(factored)
        torch.manual_seed(0)
        used = balancer.apply(model.losses(), step=0, representation=model.z)
        updates.append(({k: float(v) for k, v in used.items()}, grads(model)))
    assert found  # the factored run looked (the dense one never asks)
    assert set(found) == {1}  # and found what it should: the wide layer, or the representation
    (used_f, grads_f), (used_d, grads_d) = updates
    assert used_f == pytest.approx(used_d, rel=1e-4, abs=1e-6)
    assert_grads_close(grads_f, grads_d, rtol=1e-4, atol=1e-6)


@cases(_uses_a_jacobian)
def test_rows_kept_as_autograd_returns_them_give_the_copied_update(
    case: BalancerCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Up to four rows on the CPU, the per-loss gradients stay as autograd returns them (no copy
    # into the engine's buffers): the same weights, gradients and diagnostics as copied rows,
    # here with a fixed loss reaching the trunk (its own row, diagnostics being on).
    monkeypatch.setattr(context, "find_capture", lambda *a: None)
    kept: list[bool] = []
    real = context.gradients_at

    def gradients_at(*args: object, **kwargs: object) -> object:
        blocks, batched = real(*args, **kwargs)  # type: ignore[arg-type]
        kept.append(all(isinstance(block, RowsBlock) for block in blocks))
        return blocks, batched

    monkeypatch.setattr(context, "gradients_at", gradients_at)
    results = []
    for up_to in (4, 0):
        monkeypatch.setattr(context, "_KEEP_ROWS_UP_TO", up_to)
        model, balancer = Toy(), case.build(balance=["task0", "task1"])
        used, g = run(balancer, model, weights={"task2": 0.5}, diagnostics=True)
        shown = {k: float(v) for k, v in balancer.diagnostics().items()}
        results.append((used, g, shown))
        assert any(kept) == (up_to == 4)  # the parameter-level Jacobian (update or diagnostics)
        kept.clear()
    (used_k, grads_k, shown_k), (used_c, grads_c, shown_c) = results
    assert used_k == pytest.approx(used_c, rel=1e-5, abs=1e-7)
    assert_grads_close(grads_k, grads_c, rtol=1e-5, atol=1e-6)
    assert shown_k.keys() == shown_c.keys()
    assert shown_k == pytest.approx(shown_c, rel=1e-4, abs=1e-6)


@cases()
def test_a_copy_or_a_pickle_trains_on_its_own_state(case: BalancerCase) -> None:
    # Methods on the CPU write their state in place through views of their buffers, kept from
    # step to step: a copy must write into its own buffers, never into the original's.
    model = Toy()
    balancer = case.build()
    train(balancer, model, steps=3)
    balancer.zero_grad(set_to_none=True)  # a pickle drops .grad; train() would add to it
    before = copy.deepcopy(balancer.state_dict())
    twins = [copy.deepcopy(balancer), pickle.loads(pickle.dumps(balancer))]
    states = []
    for twin in twins:
        same = Toy()
        same.load_state_dict(model.state_dict())  # its data is the same (a fixed generator)
        torch.manual_seed(1)
        train(twin, same, steps=2)
        states.append(twin.state_dict())
        _assert_same_state(balancer.state_dict(), before)  # the original is untouched
    torch.manual_seed(1)
    train(balancer, model, steps=2)
    for state in states:
        _assert_same_state(state, balancer.state_dict())


def _assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, b[key], rtol=0.0, atol=0.0)
        else:
            assert value == b[key], key


def _backward_steps(
    balancer: torch.nn.Module, model: Toy, optimizer: torch.optim.Optimizer, steps: range
) -> list[dict[str, float]]:
    """Steps driven by ``backward()`` (which commits the previous optimizer step itself),
    seeded per step for the methods that draw random numbers."""
    used = []
    for step in steps:
        optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(step)
        used.append(balancer.backward(model.losses(), representation=model.z))
        balancer.add_parameters_to(optimizer)  # per-loss parameters exist after the first call
        optimizer.step()
    return used


@cases()
def test_a_state_dict_taken_between_backward_calls_resumes_exactly(case: BalancerCase) -> None:
    # backward() commits an optimizer step at the next call; a checkpoint taken in between
    # must carry that, or the resumed balancer skips it (FAMO's logits, DWA's window,
    # GradNorm's renormalization, Scheduled's step count fell one behind).
    model, balancer = Toy(), case.build()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    _backward_steps(balancer, model, optimizer, range(3))
    saved = copy.deepcopy((model.state_dict(), balancer.state_dict(), optimizer.state_dict()))
    expected = _backward_steps(balancer, model, optimizer, range(3, 6))

    resumed_model, resumed = Toy(), case.build()
    resumed_model.load_state_dict(saved[0])
    resumed.load_state_dict(saved[1])
    resumed_optimizer = torch.optim.SGD(resumed_model.parameters(), lr=1e-2)
    resumed.add_parameters_to(resumed_optimizer)
    resumed_optimizer.load_state_dict(saved[2])
    got = _backward_steps(resumed, resumed_model, resumed_optimizer, range(3, 6))
    for step_got, step_expected in zip(got, expected, strict=True):
        assert step_got == pytest.approx(step_expected, rel=1e-6, abs=1e-7)
