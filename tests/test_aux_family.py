"""Properties shared by every auxiliary-loss layer (cases come from ``tests/aux_cases``)."""

from __future__ import annotations

import copy
import importlib
import pkgutil
from typing import Any

import pytest
import torch

import multiloss as ml
from tests import aux_cases
from tests.aux_properties import AuxCase, first_tensor


def _all_cases() -> list[AuxCase]:
    cases: list[AuxCase] = []
    for info in sorted(pkgutil.iter_modules(aux_cases.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{aux_cases.__name__}.{info.name}")
        cases.extend(module.CASES)
    return cases


CASES = _all_cases()
pytestmark = pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])


def test_raises_before_first_forward(case: AuxCase) -> None:
    layer = case.build()
    with pytest.raises(RuntimeError, match=f"{type(layer).__name__}.*before any forward"):
        layer.compute_aux_loss()
    with pytest.raises(RuntimeError, match="before any forward"):
        layer.aux_loss_diagnostics()


def test_loss_is_a_non_negative_finite_scalar(case: AuxCase) -> None:
    layer = case.build()
    case.run(layer)
    loss = layer.compute_aux_loss()
    assert loss.shape == ()
    assert torch.isfinite(loss)
    assert float(loss.detach()) >= 0.0


def test_diagnostics_are_numbers(case: AuxCase) -> None:
    layer = case.build()
    case.run(layer)
    diagnostics = layer.aux_loss_diagnostics()
    assert diagnostics, "every layer explains itself with at least one diagnostic"
    for key, value in diagnostics.items():
        assert isinstance(key, str)
        assert type(value) is float, f"{key} is {type(value).__name__}"


def test_collected_terms_match_compute_aux_loss(case: AuxCase) -> None:
    layer = case.build(aux_loss_weight=0.5)
    inputs = case.inputs()
    with ml.collect(layer) as book:
        case.run(layer, inputs)
    assert len(book) >= 1
    assert book.nonnegative == frozenset(book)
    torch.testing.assert_close(book.total(), 0.5 * layer.compute_aux_loss())


def test_off_means_no_loss_and_no_cost(case: AuxCase) -> None:
    layer = case.build(use_aux_loss=False)

    def must_not_run(cache: Any) -> torch.Tensor:
        raise AssertionError("aux_loss_terms ran although use_aux_loss is off")

    layer.aux_loss_terms = must_not_run  # type: ignore[method-assign]
    with ml.collect(layer) as book:
        case.run(layer)
    assert len(book) == 0
    assert layer._aux_cache is None
    assert float(layer.compute_aux_loss()) == 0.0


def test_state_dict_round_trip(case: AuxCase) -> None:
    layer = case.build()
    case.run(layer)
    clone = case.build()
    clone.load_state_dict(copy.deepcopy(layer.state_dict()))
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(clone.state_dict()[key], value)
    inputs = case.inputs()
    layer.eval()
    clone.eval()
    torch.testing.assert_close(
        first_tensor(case.run(clone, inputs)), first_tensor(case.run(layer, inputs))
    )


def test_used_twice_in_one_step_errors_unless_accumulating(case: AuxCase) -> None:
    layer = case.build()
    with pytest.raises(ValueError, match="emitted twice"), ml.collect(layer):
        case.run(layer)
        case.run(layer)

    layer = case.build(accumulate_aux_loss=True)
    first, second = case.inputs(), case.inputs()
    with ml.collect(layer) as book:
        case.run(layer, first)
        case.run(layer, second)
    per_call = []
    for inputs in (first, second):
        case.run(layer, inputs)
        per_call.append(layer.compute_aux_loss())
    torch.testing.assert_close(book.total(), per_call[0] + per_call[1], rtol=1e-4, atol=1e-5)


def test_weight_is_validated(case: AuxCase) -> None:
    layer = case.build()
    for bad, error in ((-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)):
        with pytest.raises(error, match="`aux_loss_weight` of"):
            layer.aux_loss_weight = bad  # type: ignore[assignment]


def test_works_under_autocast(case: AuxCase) -> None:
    layer = case.build()
    with torch.autocast("cpu", dtype=torch.bfloat16), ml.collect(layer) as book:
        case.run(layer)
    total = book.total()
    assert torch.isfinite(total.float())


def test_repr_shows_weight(case: AuxCase) -> None:
    layer = case.build(aux_loss_weight=0.25)
    assert "aux_loss_weight=0.25" in repr(layer)


def test_schedule_and_accumulate_are_validated(case: AuxCase) -> None:
    name = type(case.build()).__name__
    with pytest.raises(TypeError, match=f"`accumulate_aux_loss` of {name} must be a bool; got 1"):
        case.build(accumulate_aux_loss=1)
    with pytest.raises(ValueError, match=f"`aux_loss_schedule` of {name} must be >= 0.0; got -1"):
        case.build(aux_loss_schedule=-1.0)
    layer = case.build(aux_loss_schedule=lambda step: -1.0)
    with (
        pytest.raises(
            ValueError,
            match=rf"the value of `aux_loss_schedule` Lambda\(<lambda>\) of {name} at step 3 "
            r"must be >= 0.0; got -1.0",
        ),
        ml.collect(layer, step=3),
    ):
        case.run(layer)
