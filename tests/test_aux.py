"""The AuxiliaryLossModule contract beyond the family properties."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.schedules import LinearWarmup
from tests.aux_cases.toy import ToyPenalty


class Negative(ml.AuxiliaryLossModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.save_for_aux_loss(x)
        return x

    def aux_loss_terms(self, cache: torch.Tensor) -> torch.Tensor:
        return -cache.abs().mean()

    def aux_diagnostics(self, cache: Any) -> dict[str, Any]:
        return {"label": "not a number"}


def test_compute_aux_loss_is_coefficient_weighted_sum_without_layer_weight() -> None:
    layer = ToyPenalty(aux_loss_weight=3.0)
    out = layer(torch.randn(5, 4))
    expected = out.abs().mean() + 0.5 * out.pow(2).mean()
    torch.testing.assert_close(layer.compute_aux_loss(), expected)


def test_terms_are_named_by_path_with_weight_times_coefficient() -> None:
    model = nn.Sequential(nn.Linear(4, 4), ToyPenalty(aux_loss_weight=2.0))
    with ml.collect(model) as book:
        model(torch.randn(2, 4))
    assert book.weights == {"1/l1": 2.0, "1/l2": 1.0}
    assert book.aux_modules == {"1": model[1]}
    assert book.origins["1/l1"] == "1"


def test_rootless_collector_names_layers_from_the_call_stack() -> None:
    model = nn.Sequential(ToyPenalty(), nn.Sequential(ToyPenalty()))
    with ml.collect() as book:
        model(torch.randn(2, 4))
    assert sorted(book) == ["0/l1", "0/l2", "1.0/l1", "1.0/l2"]


def test_schedule_multiplies_weight_at_the_collector_step() -> None:
    layer = ToyPenalty(aux_loss_weight=2.0, aux_loss_schedule=LinearWarmup(10))
    for step, expected in ((0, 0.0), (5, 1.0), (20, 2.0)):
        with ml.collect(layer, step=step) as book:
            layer(torch.randn(2, 4))
        assert book.weights["l1"] == pytest.approx(expected)


def test_negative_term_is_an_error_naming_the_layer() -> None:
    layer = Negative()
    layer(torch.ones(2))
    with pytest.raises(ValueError, match="Negative returned a negative auxiliary loss term 'aux'"):
        layer.compute_aux_loss()


def test_non_numeric_diagnostic_is_an_error_naming_the_key() -> None:
    layer = Negative()
    layer(torch.ones(2))
    with pytest.raises(TypeError, match="diagnostic 'label' of Negative must be a number"):
        layer.aux_loss_diagnostics()


def test_use_aux_loss_must_be_bool_and_turning_off_frees_cache() -> None:
    layer = ToyPenalty()
    layer(torch.randn(2, 4))
    assert layer._aux_cache is not None
    with pytest.raises(TypeError, match="`use_aux_loss` of ToyPenalty must be a bool; got 1"):
        layer.use_aux_loss = 1  # type: ignore[assignment]
    layer.use_aux_loss = False
    assert layer._aux_cache is None
    assert layer.aux_loss_diagnostics() == {}


def test_plain_inference_computes_no_terms() -> None:
    layer = ToyPenalty()
    calls = []
    original = layer.aux_loss_terms
    layer.aux_loss_terms = lambda cache: calls.append(1) or original(cache)  # type: ignore
    layer(torch.randn(2, 4))
    assert calls == []


def test_compiled_layer_contributes_the_same_terms_as_eager() -> None:
    model = nn.Sequential(ToyPenalty(), ToyPenalty())
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(3, 4)
    with ml.collect(model) as eager:
        model(x)
    with ml.collect(model) as book:
        compiled(x)
    assert sorted(book) == sorted(eager)
    for name in eager:
        torch.testing.assert_close(book[name], eager[name])


def test_compiled_layer_without_root_is_a_clear_error() -> None:
    compiled = torch.compile(ToyPenalty(), fullgraph=True)
    with pytest.raises(RuntimeError, match=r"pass the model to the collector"), ml.collect():
        compiled(torch.randn(2, 4))


def test_repr_lists_non_default_settings() -> None:
    layer = ToyPenalty(
        aux_loss_weight=0.5,
        use_aux_loss=False,
        accumulate_aux_loss=True,
        aux_loss_schedule=LinearWarmup(100),
    )
    text = repr(layer)
    for part in (
        "aux_loss_weight=0.5",
        "use_aux_loss=False",
        "accumulate_aux_loss=True",
        "LinearWarmup(steps=100",
    ):
        assert part in text


def test_caching_a_parameter_does_not_register_it() -> None:
    class CachesWeight(ml.AuxiliaryLossModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.save_for_aux_loss(self.weight)
            return x * self.weight

        def aux_loss_terms(self, cache: torch.Tensor) -> torch.Tensor:
            return cache.pow(2).sum()

    layer = CachesWeight()
    layer(torch.ones(2))
    assert list(layer.state_dict()) == ["weight"]
    assert len(list(layer.parameters())) == 1
    assert float(layer.compute_aux_loss().detach()) == 2.0


class _Returns(ToyPenalty):
    """ToyPenalty whose terms or coefficients are replaced by what a test gives."""

    def __init__(self, terms: Any = None, coefficients: Any = None) -> None:
        super().__init__()
        self._given_terms = terms
        self._given_coefficients = coefficients

    def aux_loss_terms(self, cache: torch.Tensor) -> Any:
        if self._given_terms is None:
            return super().aux_loss_terms(cache)
        return self._given_terms

    def aux_loss_coefficients(self) -> Any:
        if self._given_coefficients is None:
            return super().aux_loss_coefficients()
        return self._given_coefficients


@pytest.mark.parametrize(
    ("layer", "error", "match"),
    [
        (
            _Returns(coefficients={"l1": float("nan")}),
            ValueError,
            r"coefficient 'l1' returned by _Returns.aux_loss_coefficients\(\) must be a finite "
            r"float; got nan",
        ),
        (
            _Returns(coefficients={"l1": -2.0}),
            ValueError,
            r"coefficient 'l1' returned by _Returns.aux_loss_coefficients\(\) must be >= 0.0; "
            r"got -2.0",
        ),
        (
            _Returns(coefficients={"zz": 1.0}),
            ValueError,
            r"_Returns.aux_loss_coefficients\(\) names a term 'zz' that "
            r"_Returns.aux_loss_terms\(\) did not return; its terms are \['l1', 'l2'\]",
        ),
        (
            _Returns(terms={"": torch.tensor(1.0)}),
            ValueError,
            r"a term name returned by _Returns.aux_loss_terms\(\) must be a non-empty string",
        ),
        (
            _Returns(terms={"l1": 1.0}),
            TypeError,
            r"term 'l1' returned by _Returns.aux_loss_terms\(\) must be a scalar Tensor; got 1.0",
        ),
        (
            _Returns(terms=[torch.tensor(1.0)]),
            TypeError,
            r"_Returns.aux_loss_terms\(\) must return a scalar Tensor or a mapping",
        ),
    ],
    ids=[
        "nan-coefficient",
        "negative-coefficient",
        "unknown-term",
        "empty-name",
        "float-term",
        "list",
    ],
)
def test_what_subclasses_return_is_checked(
    layer: ml.AuxiliaryLossModule, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match), ml.collect(layer):
        layer(torch.randn(2, 4))
    with pytest.raises(error, match=match):
        layer.compute_aux_loss()
