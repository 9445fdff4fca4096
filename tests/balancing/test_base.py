"""The ``Balancer`` contract: selection, errors, one-call use, state, optimizer wiring."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import multiloss as ml
from multiloss.balancing import (
    DWA,
    FAMO,
    BalanceContext,
    GradNorm,
    LossWeighting,
    Normalize,
    Scheduled,
    Sum,
    Uncertainty,
)
from tests.balancing.cases.engine import Mean
from tests.balancing.properties import Toy, grads


class Broken(LossWeighting):
    """Produces a NaN weight on purpose."""

    per_loss_state = True

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        self.register_buffer("memory", torch.full((len(names),), 7.0, device=device))

    def factors(self, ctx: BalanceContext) -> Tensor:
        return torch.full((ctx.num_losses,), float("nan"))


def test_empty_balance_is_an_error() -> None:
    with pytest.raises(ValueError, match="`balance` of Sum is empty"):
        Sum(balance=[])


def test_balance_entry_must_be_a_name() -> None:
    with pytest.raises(TypeError, match="each entry of `balance` of Sum must be a non-empty"):
        Sum(balance=["a", 3])  # type: ignore[list-item]


def test_a_name_in_balance_that_no_loss_has_is_an_error() -> None:
    model = Toy()
    with pytest.raises(ValueError, match=r"`balance` of Sum names 'task9' but no loss matches"):
        Sum(balance=["task0", "task9"]).apply(model.losses(), step=0)
    with pytest.raises(ValueError, match=r"names 'aux/\*' but no loss matches"):
        Sum(balance="aux/*").apply(model.losses(), step=0)


def test_balance_accepts_glob_patterns() -> None:
    model = Toy()
    used = Uncertainty(balance="task[01]").apply(model.losses(), step=0)
    assert isinstance(used["task2"], float)
    assert used["task2"] == 1.0
    assert isinstance(used["task0"], Tensor)


@pytest.mark.parametrize("make", [Mean, GradNorm])
def test_a_balanced_loss_that_reaches_no_shared_parameter_is_an_error(make: type) -> None:
    model = Toy()
    losses = model.losses()
    stray = nn.Parameter(torch.tensor(3.0))
    losses["stray"] = stray**2
    with pytest.raises(ValueError, match="balanced loss 'stray' does not reach any shared"):
        make().apply(losses, step=0)


def test_no_shared_parameter_at_all_is_an_error() -> None:
    a, b = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(2.0))
    with pytest.raises(ValueError, match="Mean found no shared parameter"):
        Mean().apply({"a": a**2, "b": b**2}, step=0)


def test_given_shared_parameters_are_checked_too() -> None:
    model = Toy()
    with pytest.raises(ValueError, match="balanced loss 'task1' does not reach any shared"):
        Mean().apply(model.losses(), step=0, shared=list(model.heads[0].parameters()))


def test_empty_losses_and_unknown_weights_are_errors() -> None:
    with pytest.raises(ValueError, match="got no losses to balance"):
        Sum().apply({}, step=0)
    with pytest.raises(TypeError, match=r"`losses` of Sum\.apply must be a mapping"):
        Sum().apply([torch.tensor(1.0)], step=0)  # type: ignore[arg-type]
    model = Toy()
    with pytest.raises(ValueError, match=r"`weights` of Sum.apply names losses that are not there"):
        Sum().apply(model.losses(), {"nope": 1.0}, step=0)
    with pytest.raises(ValueError, match="`weight` for loss 'task0' must be a finite float"):
        Sum().apply(model.losses(), {"task0": float("inf")}, step=0)
    with pytest.raises(ValueError, match=r"`step` of Sum\.apply must be >= 0"):
        Sum().apply(model.losses(), step=-1)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (Uncertainty, "Uncertainty"),
        (DWA, "DWA"),
        (FAMO, "FAMO"),
        (GradNorm, "GradNorm"),
    ],
)
def test_negative_loss_to_a_method_that_needs_positive_losses(make: type, name: str) -> None:
    model = Toy()
    losses = model.losses()
    losses["task1"] = losses["task1"] - 1e6
    with pytest.raises(ValueError, match=rf"{name} needs every balanced loss .* 'task1' = -"):
        make().apply(losses, step=0)


def test_a_lower_bound_admits_negative_losses() -> None:
    model = Toy()
    losses = model.losses()
    losses["task1"] = losses["task1"] - 1e6
    Uncertainty(lower_bound={"task1": -1e6}).apply(losses, step=0)
    FAMO(lower_bound={"task1": -1e6}).apply(model.losses(), step=0)


def test_non_finite_weights_stop_with_the_method_name_and_state() -> None:
    model = Toy()
    with pytest.raises(RuntimeError, match=r"Broken produced non-finite weights at step 4") as info:
        Broken().apply(model.losses(), step=4)
    assert "memory=[7.0, 7.0, 7.0]" in str(info.value)
    assert "losses=['task0', 'task1', 'task2']" in str(info.value)


def test_stateful_balancer_needs_the_same_losses() -> None:
    model = Toy()
    balancer = Uncertainty()
    balancer.apply(model.losses(["task0", "task1"]), step=0)
    with pytest.raises(ValueError, match="keeps per-loss state for the losses"):
        balancer.apply(model.losses(), step=1)


def test_exact_balance_names_create_the_state_at_construction() -> None:
    balancer = Uncertainty(balance=["task0", "task1"])
    assert [tuple(p.shape) for p in balancer.parameters()] == [(2,)]
    assert Uncertainty(balance="task*").parameter_group() is None


def test_backward_is_one_call_and_counts_steps() -> None:
    model = Toy()
    balancer = DWA(window=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        used = balancer.backward(model.losses())
        assert all(type(v) is float for v in used.values())
        optimizer.step()
    assert balancer._steps_taken == 2  # the third call's step is not acknowledged yet


def test_backward_reads_weights_and_representation_from_a_book() -> None:
    model = Toy()
    with ml.collect(model) as book:
        for name, value in model.losses().items():
            book.add(name, value, weight=-1.0 if name == "task1" else 1.0)
    used = Mean(level="representation").backward(book)
    assert used["task1"] == -1.0


def test_add_parameters_to_the_optimizer_once() -> None:
    model = Toy()
    balancer = Uncertainty()
    optimizer = torch.optim.Adam(model.parameters())
    assert not balancer.add_parameters_to(optimizer)  # nothing yet: created at the first call
    balancer.apply(model.losses(), step=0)
    assert balancer.add_parameters_to(optimizer)
    assert not balancer.add_parameters_to(optimizer)
    group = optimizer.param_groups[-1]
    assert group["weight_decay"] == 0.0
    assert group["params"][0] is balancer.log_vars


def test_parameters_that_no_optimizer_steps_raise_a_warning() -> None:
    model = Toy()
    balancer = Uncertainty()
    for step in range(3):  # the first call records the versions; two more without change
        balancer.apply(model.losses(), step=step)
        balancer.after_optimizer_step()
    balancer.apply(model.losses(), step=3)
    with pytest.warns(RuntimeWarning, match="receive gradients but no optimizer updates them"):
        balancer.after_optimizer_step()


def test_stepped_parameters_raise_no_warning() -> None:
    model = Toy()
    balancer = Uncertainty(lr=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(5):
            optimizer.zero_grad()
            balancer.apply(model.losses(), step=step)
            balancer.add_parameters_to(optimizer)
            optimizer.step()
            balancer.after_optimizer_step()
    assert optimizer.param_groups[-1]["lr"] == 0.1


def test_state_dict_restores_lazy_state_into_a_fresh_balancer() -> None:
    model = Toy()
    balancer = Normalize(Uncertainty())
    for step in range(3):
        balancer.apply(model.losses(), step=step)
        balancer.after_optimizer_step()
    state = copy.deepcopy(balancer.state_dict())
    assert set(state) >= {"mean", "decay", "inner.log_vars", "_extra_state", "inner._extra_state"}
    clone = Normalize(Uncertainty())
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.inner.log_vars, balancer.inner.log_vars)
    assert clone._steps_taken == 3


def test_module_apply_still_applies_a_function() -> None:
    seen: list[str] = []
    Normalize(Uncertainty()).apply(lambda module: seen.append(type(module).__name__))
    assert seen == ["Uncertainty", "Normalize"]  # children first, as nn.Module.apply does


def test_wrapper_and_inner_cannot_both_choose_losses() -> None:
    with pytest.raises(ValueError, match="`balance` is given to both Normalize"):
        Normalize(Sum(balance=["a"]), balance=["b"])
    assert Normalize(Sum(balance=["a"])).balance == ("a",)
    with pytest.raises(TypeError, match="`inner` of Scheduled must be a Balancer"):
        Scheduled(3)  # type: ignore[arg-type]


def test_diagnostics_include_method_state() -> None:
    model = Toy()
    balancer = Normalize(Uncertainty())
    balancer.apply(model.losses(), step=0, diagnostics=True)
    keys = set(balancer.diagnostics())
    assert "balance/normalize/scale/task0" in keys
    assert "balance/uncertainty/log_var/task2" in keys
    assert "grad/share/task1" in keys


def test_fixed_losses_keep_their_ordinary_gradient_in_the_gradient_path() -> None:
    model = Toy()
    weights = {"task0": 1.0, "task1": 2.0, "task2": -0.5}
    model.zero_grad()
    Mean(balance=["task0", "task1"]).apply(model.losses(), weights, step=0)
    got = grads(model)
    model.zero_grad()
    Sum().apply(model.losses(), weights, step=0)
    torch.testing.assert_close(got, grads(model))
