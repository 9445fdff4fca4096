"""The spec forms: construction, validation, reprs and terms."""

from __future__ import annotations

import math

import pytest
import torch

from multiloss.losses import CrossEntropy, MeanSquared
from multiloss.schedules import Constant, KLAnneal, Lambda, LinearWarmup
from multiloss.spec import Attach, Automatic, AutomaticSpec, Maximize, Port, Scaled


def test_automatic_is_an_instance_and_callable() -> None:
    assert isinstance(Automatic, AutomaticSpec)
    assert [t.port for t in Automatic.terms()] == [None]
    assert [t.port for t in Automatic("a", "b").terms()] == ["a", "b"]
    assert repr(Automatic("a")) == "Automatic('a')"


def test_automatic_ports_must_be_distinct_names() -> None:
    with pytest.raises(ValueError, match="the ports of Automatic must be distinct"):
        Automatic("a", "a")
    with pytest.raises(TypeError, match="each port of Automatic must be a non-empty string"):
        Automatic(3)  # type: ignore[arg-type]


def test_port() -> None:
    (term,) = Port("kl", name="kl_div").terms()
    assert (term.kind, term.port, term.name) == ("port", "kl", "kl_div")
    assert repr(Port("kl", name="kl_div")) == "Port('kl', name='kl_div')"
    with pytest.raises(TypeError, match="`port` of Port must be a non-empty string"):
        Port(None)  # type: ignore[arg-type]


def test_attach() -> None:
    loss = CrossEntropy()
    spec = Attach("logits", loss, target="label", name="ce")
    (term,) = spec.terms()
    assert (term.port, term.loss, term.target, term.name) == ("logits", loss, "label", "ce")
    assert term.target_key == "label"
    assert repr(spec) == (
        "Attach('logits', CrossEntropy(input='logits'), target='label', name='ce')"
    )


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("", MeanSquared()), ValueError, "`port` of Attach must be a non-empty string"),
        (("y", "mse"), TypeError, "`loss` of Attach must be a loss module or a function"),
        (("y", Port("y")), TypeError, r"wrap the whole Attach instead"),
        (("y", lambda a, b, c: a), TypeError, r"must take \(input, target\) or \(input\)"),
    ],
)
def test_attach_bad_arguments(args: tuple, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Attach(*args)


def test_attach_bad_target_and_name() -> None:
    with pytest.raises(TypeError, match="`target` of Attach must be a non-empty string"):
        Attach("y", MeanSquared(), target=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`name` of Attach must be a non-empty string"):
        Attach("y", MeanSquared(), name=" y")


def test_scaled_with_a_float() -> None:
    (term,) = Scaled("kl", 0.25).terms()
    assert term.weight(0) == 0.25
    assert repr(Scaled("kl", 0.25)) == "Scaled('kl', 0.25)"


def test_scaled_with_schedules() -> None:
    (term,) = Scaled("kl", KLAnneal(100, ratio=0.5)).terms()
    assert term.weight(0) == 0.0
    assert term.weight(25) == pytest.approx(0.5)
    assert term.weight(1000) == 1.0
    (term,) = Scaled("kl", lambda step: 1.0 / (1 + step)).terms()
    assert isinstance(term.schedules[0], Lambda)
    assert term.weight(3) == 0.25


def test_scaled_with_a_scalar_tensor() -> None:
    assert Scaled("x", torch.tensor(3.0)).terms()[0].weight(0) == 3.0


@pytest.mark.parametrize("factor", [math.nan, math.inf, -math.inf])
def test_scaled_non_finite_factor(factor: float) -> None:
    with pytest.raises(
        ValueError, match=f"`factor` of Scaled must be a finite float; got {factor}"
    ):
        Scaled("x", factor)


@pytest.mark.parametrize("factor", ["2", True, None, [1.0]])
def test_scaled_factor_of_wrong_type(factor: object) -> None:
    with pytest.raises(TypeError, match="`factor` of Scaled must be a finite float"):
        Scaled("x", factor)  # type: ignore[arg-type]


def test_scaled_schedule_that_returns_nan_is_named_when_read() -> None:
    (term,) = Scaled("x", lambda step: math.nan).terms()
    with pytest.raises(ValueError, match="value of schedule '<lambda>' at step 4 must be a finite"):
        term.weight(4)


def test_maximize_is_scaled_by_minus_one() -> None:
    assert Maximize("gain") == Scaled("gain", -1.0)
    assert isinstance(Maximize("gain"), Scaled)
    assert repr(Maximize(Port("gain"))) == "Maximize(Port('gain'))"
    assert Maximize(["a", "b"]).terms()[1].weight(0) == -1.0


def test_scaled_list_scales_every_term() -> None:
    terms = Scaled(["a", Scaled("b", 3.0), Maximize("c")], 2.0).terms()
    assert [t.weight(0) for t in terms] == [2.0, 6.0, -2.0]


def test_scaled_keeps_schedules_of_inner_terms() -> None:
    warmup = LinearWarmup(10)
    (term,) = Maximize(Scaled(Scaled("x", warmup), Constant(0.5))).terms()
    assert term.weight(5) == pytest.approx(-0.25)
    assert term.schedules[0] is warmup


def test_specs_are_hashable_values() -> None:
    assert len({Port("a"), Scaled("a", 1.0), Maximize(Maximize("a"))}) == 1
