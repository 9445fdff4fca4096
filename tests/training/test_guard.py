"""The step guard: a non-finite loss or gradient anywhere stops the step, is named, and
nothing (parameters, optimizer state, a balancer's statistics) is changed by it."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

import multiloss as ml
from multiloss.balancing import DWA, FAMO, Balancer, Normalize, PCGrad
from multiloss.training.groups import OptimizerGroup


class Heads(nn.Module):
    """A shared layer and two heads; loss 'b' is NaN (or inf) on the listed forward calls."""

    def __init__(self, bad_calls: set[int], value: float = float("nan")) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(2, 4)
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(2))
        self.bad_calls, self.value, self.calls = bad_calls, value, 0

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = torch.relu(self.body(x))
        a, b = (head(z).pow(2).mean() + 0.5 for head in self.heads)
        if self.calls in self.bad_calls:
            b = b * self.value
        self.calls += 1
        return {"a": a, "b": b}


def _state(module: nn.Module) -> dict[str, object]:
    return copy.deepcopy(module.state_dict())


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(x, y) if isinstance(x, Tensor) else x == y  # type: ignore[arg-type]
        for x, y in zip(a.values(), b.values(), strict=True)
    )


BALANCERS = [Normalize, FAMO, DWA, lambda: Normalize(PCGrad())]


@pytest.mark.parametrize("make", BALANCERS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_balancer_never_sees_a_nonfinite_loss(make: object, value: float) -> None:
    model = Heads({3}, value)
    balancer: Balancer = make()  # type: ignore[operator]
    trainer = ml.Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        balancer=balancer,
        sinks=[],
        nonfinite="skip",
    )
    batches = [torch.ones(3, 2)] * 8
    trainer.fit(batches, steps=3)
    before, params = _state(balancer), _state(model)
    trainer.fit(batches, steps=4)  # the fourth step's 'b' is not finite: skipped
    assert trainer.skipped == 1
    assert _same(_state(balancer), before)  # statistics untouched by the bad values
    assert _same(_state(model), params)
    trainer.fit(batches, steps=8)  # and training goes on with finite weights
    weights = [r[f"weight/{n}"] for r in trainer.history if r["kind"] == "train" for n in "ab"]
    assert len(weights) >= 2
    assert all(math.isfinite(w) for w in weights)


@pytest.mark.parametrize("make", BALANCERS)
def test_with_a_balancer_raise_mode_names_the_loss_not_the_method(make: object) -> None:
    model = Heads({1})
    balancer: Balancer = make()  # type: ignore[operator]
    trainer = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.01), balancer=balancer, sinks=[]
    )
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 1: 'b' = nan"):
        trainer.fit([torch.ones(3, 2)] * 4, steps=4)


class SqrtAtZero(nn.Module):
    """Finite losses whose gradient is NaN: d sqrt(u)/du is infinite at u = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = self.lin(x).mean()
        return {"task": out.pow(2), "kink": torch.sqrt(out - out.detach())}


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_a_nonfinite_gradient_of_finite_losses_stops_the_step(nonfinite: str) -> None:
    # No clipping: the guard computes the gradient norm itself.
    model = SqrtAtZero()
    before = _state(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    trainer = ml.Trainer(model, optimizer, sinks=[], nonfinite=nonfinite)
    batches = [torch.ones(2, 2)] * 2
    if nonfinite == "raise":
        with pytest.raises(
            FloatingPointError, match=r"non-finite gradient at step 0: every loss is finite"
        ):
            trainer.fit(batches, steps=2)
    else:
        trainer.fit(batches, steps=2)
        assert trainer.skipped == 2
        (event, _) = [e for e in trainer.history.events if e["event"] == "nonfinite"]
        assert "every loss is finite (kink, task)" in event["message"]
    assert _same(_state(model), before)
    assert optimizer.state_dict()["state"] == {}


class NaNTerm(ml.AuxiliaryLossModule):
    """An auxiliary-loss layer whose term is NaN on its third call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.save_for_aux_loss(x)
        return x

    def aux_loss_terms(self, cache: Tensor) -> Tensor:
        self.calls += 1
        value = cache.abs().mean()
        return value * float("nan") if self.calls == 3 else value


def test_a_nan_auxiliary_term_is_nonfinite_not_negative() -> None:
    model = nn.Sequential(nn.Linear(2, 2), NaNTerm())
    trainer = ml.Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sinks=[],
        forward=lambda m, b: m(b).pow(2).mean(),
        nonfinite="skip",
    )
    trainer.fit([torch.ones(1, 2)] * 4, steps=4)
    assert trainer.skipped == 1
    (event,) = [e for e in trainer.history.events if e["event"] == "nonfinite"]
    assert "'1/aux' = nan" in event["message"]
    assert "negative" not in event["message"]


def test_accumulation_names_a_loss_from_an_early_micro_batch() -> None:
    model = Heads({4})  # step 1 (calls 3, 4, 5): its second micro-batch
    trainer = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.01), sinks=[], accumulate=3
    )
    with pytest.raises(FloatingPointError, match=r"at step 1: 'b' = nan \(micro-batch 2 of 3\)"):
        trainer.fit([torch.ones(3, 2)] * 9, steps=3)


def test_a_nan_in_the_idle_groups_loss_stops_the_step() -> None:
    model = Heads({1})  # step 1: group "gb" is idle (it steps on even steps)
    ga = OptimizerGroup(torch.optim.SGD(model.parameters(), lr=0.01), losses=["a"], name="ga")
    gb = OptimizerGroup(torch.optim.SGD(model.parameters(), lr=0.01), losses=["b"], name="gb")
    trainer = ml.Trainer(model, [gb, ga], sinks=[], nonfinite="skip")
    trainer.fit([torch.ones(3, 2)] * 4, steps=4)
    assert trainer.skipped == 1
    (event,) = [e for e in trainer.history.events if e["event"] == "nonfinite"]
    assert "'b' = nan" in event["message"]
    assert event["step"] == 2  # the row of the step it skipped, as train rows count steps


def test_losses_without_a_graph_are_a_clear_error() -> None:
    model = nn.Linear(2, 1)
    trainer = ml.Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        sinks=[],
        forward=lambda m, b: m(b).mean().detach(),
    )
    with pytest.raises(ValueError, match=r"none of the losses of optimizer group .* has a graph"):
        trainer.fit([torch.ones(1, 2)], steps=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_large_finite_gradients_are_finite(dtype: torch.dtype) -> None:
    from multiloss.training.step import _all_finite

    big = torch.full((10_000,), 1000.0, dtype=dtype)  # 2-norm 1e5: past float16's range
    assert bool(_all_finite([big, torch.ones(3, dtype=dtype)]))
    assert not bool(_all_finite([big, torch.tensor([1.0, float("nan")], dtype=dtype)]))
    assert not bool(_all_finite([torch.tensor([float("inf")], dtype=dtype)]))
    mixed = [big.float(), torch.tensor([float("inf")], dtype=dtype)]  # the fallback
    assert not bool(_all_finite(mixed))
