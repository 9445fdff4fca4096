"""The ``Balancer`` contract: selection, errors, one-call use, state, optimizer wiring."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import multiloss as ml
import multiloss.balancing.context as context
from multiloss.balancing import (
    DWA,
    FAMO,
    MGDA,
    BalanceContext,
    Balancer,
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
    ("make", "name", "advice"),
    [
        (Uncertainty, "Uncertainty", "Pass `lower_bound=` with a value the loss can never go"),
        (DWA, "DWA", "DWA takes no lower bound: shift the loss by a constant"),
        (FAMO, "FAMO", "Pass `lower_bound=` with a value the loss can never go"),
        (GradNorm, "GradNorm", "GradNorm takes no lower bound: shift the loss by a constant"),
        (
            lambda: MGDA(normalization="loss"),
            "MGDA",
            "Use `normalization='l2'` or 'none' (they do not divide by the loss)",
        ),
    ],
)
def test_negative_loss_to_a_method_that_needs_positive_losses(
    make: Callable[[], Balancer], name: str, advice: str
) -> None:
    model = Toy()
    losses = model.losses()
    losses["task1"] = losses["task1"] - 1e6
    with pytest.raises(
        ValueError, match=rf"{name} needs every balanced loss .* 'task1' = -"
    ) as info:
        make().apply(losses, step=0)
    assert advice in str(info.value)
    # The advice only names what the class takes.
    assert ("lower_bound=` with" in str(info.value)) == hasattr(make(), "lower_bound")


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


_LEAF = nn.Parameter(torch.tensor(1.0))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda b, m: b.apply(m.losses(), "x", step=0),  # type: ignore[arg-type]
            TypeError,
            r"`weights` of Sum\.apply must be a mapping of loss name -> float \(or None\); "
            r"got 'x' \(str\)",
        ),
        (
            lambda b, m: b.backward(m.losses(), weights="x"),  # type: ignore[arg-type]
            TypeError,
            r"`weights` of Sum\.backward must be a mapping",
        ),
        (
            lambda b, m: b.apply(m.losses(), step=0, representation="x"),  # type: ignore[arg-type]
            TypeError,
            r"`representation` of Sum\.apply must be a tensor .* got 'x' \(str\)",
        ),
        (
            lambda b, m: b.backward(m.losses(), diagnostics="yes"),  # type: ignore[arg-type]
            TypeError,
            r"`diagnostics` of Sum\.backward must be a bool; got 'yes' \(str\)",
        ),
        (
            lambda b, m: b.apply({1: _LEAF * 2, "b": _LEAF * 3}, step=0),  # type: ignore[dict-item]
            TypeError,
            r"each loss name \(key of `losses`\) of Sum\.apply must be a string; got 1 \(int\)",
        ),
        (
            lambda b, m: b.apply(m.losses(), step=0, shared="x"),  # type: ignore[arg-type]
            TypeError,
            r"`shared` of Sum\.apply must be a sequence of tensors that require grad; got 'x'",
        ),
        (
            lambda b, m: b.apply(m.losses(), step=0, shared=[1, 2]),  # type: ignore[list-item]
            TypeError,
            r"`shared` of Sum\.apply must be a sequence of tensors .* whose item 0 is 1 \(int\)",
        ),
        (
            lambda b, m: b.apply(m.losses(), step=0, shared=m.trunk[0].weight),
            TypeError,
            r"`shared` of Sum\.apply .* \(put a single tensor in a list\)",
        ),
        (
            lambda b, m: b.apply(m.losses(), step=0, shared=[torch.ones(2)]),
            ValueError,
            r"`shared` of Sum\.apply .*; item 0 of it does not require grad",
        ),
        (
            lambda b, m: b.add_parameters_to("x"),  # type: ignore[arg-type]
            TypeError,
            r"`optimizer` of Sum\.add_parameters_to must be a torch\.optim\.Optimizer .* "
            r"got 'x' \(str\)",
        ),
    ],
    ids=[
        "weights",
        "weights-backward",
        "representation",
        "diagnostics",
        "key",
        "shared-str",
        "shared-ints",
        "shared-tensor",
        "shared-no-grad",
        "optimizer",
    ],
)
def test_wrong_argument_types_are_named(
    call: Callable[[Balancer, Toy], object], error: type[Exception], message: str
) -> None:
    model = Toy()
    with pytest.raises(error, match=message):
        call(Sum(), model)
    assert all(p.grad is None for p in model.parameters())


def test_balance_must_be_names() -> None:
    with pytest.raises(TypeError, match=r"`balance` of Uncertainty must be a loss name, .* got 5"):
        Uncertainty(balance=5)  # type: ignore[arg-type]


def test_shared_of_a_gradient_method_is_named_not_blamed_on_the_losses() -> None:
    model = Toy()
    for shared in ("x", [1], [1, 2]):
        with pytest.raises(TypeError, match=r"^`shared` of MGDA\.apply must be a sequence of"):
            MGDA().apply(model.losses(), step=0, shared=shared)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [Sum, Uncertainty, Normalize, FAMO])
def test_a_loss_that_is_a_parameter_is_balanced_by_loss_weighting(
    make: Callable[[], Balancer],
) -> None:
    model = Toy()
    losses = model.losses()
    leaf = nn.Parameter(torch.tensor(3.0))
    losses["leaf"] = leaf  # requires grad, no grad_fn: it has a graph (itself)
    used = make().apply(losses, step=0)
    assert leaf.grad is not None
    assert float(leaf.grad) == pytest.approx(float(used["leaf"]))


def test_backward_names_itself_in_errors() -> None:
    model = Toy()
    losses = model.losses()
    losses["task0"] = losses["task0"].detach()
    with pytest.raises(ValueError, match=r"balanced loss 'task0' of MGDA\.backward has no graph"):
        MGDA().backward(losses)
    losses = model.losses()
    losses["task0"] = losses["task0"] * float("nan")
    with pytest.raises(FloatingPointError, match=r"loss 'task0' is nan at step 0; Sum wrote"):
        Sum().backward(losses)
    for losses_given in ([1.0], lambda module: None):  # a function: nn.Module.apply's argument
        with pytest.raises(TypeError, match=r"`losses` of Sum\.backward must be a mapping"):
            Sum().backward(losses_given)  # type: ignore[arg-type]


def test_every_non_finite_loss_is_listed() -> None:
    model = Toy()
    losses = model.losses()
    losses["task0"] = losses["task0"] * float("inf")
    losses["task2"] = losses["task2"] * float("nan")
    with pytest.raises(
        FloatingPointError,
        match=r"^loss 'task0' is inf, loss 'task2' is nan at step 5; FAMO wrote no gradient",
    ):
        FAMO().apply(losses, step=5)


def test_a_non_finite_loss_on_an_accelerator_is_found_at_the_next_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where reading the values would wait for the device (here simulated by the compiled
    path, which defers the same way), a flag is kept and read at the next check."""
    model = Toy()
    balancer = Normalize()
    balancer.apply(model.losses(), step=0)  # the first call checks at once anyway
    losses = model.losses()
    losses["task1"] = losses["task1"] * float("nan")
    with monkeypatch.context() as patch:
        patch.setattr(torch.compiler, "is_compiling", lambda: True)
        balancer._check_finite(
            context._Session(
                owner="Normalize",
                names=("task0", "task1", "task2"),
                losses=tuple(losses[n] for n in ("task0", "task1", "task2")),
                fixed_names=(),
                fixed_losses=(),
                fixed_weights=(),
                scale=1.0,
                shared=None,
                representation=None,
                diagnostics=False,
                engine=balancer._engine,
            ),
            7,
        )
    assert len(balancer._checks) == 1  # nothing read yet
    with pytest.raises(
        FloatingPointError, match=r"loss 'task1' is nan at step 7 or before; Normalize already"
    ):
        balancer.check()
