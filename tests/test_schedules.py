"""Schedules: values at known steps, bounds (property-based), composition and errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiloss.schedules import (
    Constant,
    Cosine,
    Cyclic,
    KLAnneal,
    Lambda,
    LinearWarmup,
    Product,
    Schedule,
    SigmoidRamp,
    StepDecay,
    as_schedule,
)

steps = st.integers(min_value=0, max_value=10**6)

BOUNDED = [
    LinearWarmup(100, start=0.2, end=1.0),
    Cosine(100, start=1.0, end=0.1, warmup=10),
    Cyclic(20, low=0.1, high=0.9),
    Cyclic(20, shape="cosine"),
    KLAnneal(1000, cycles=4, ratio=0.5),
    SigmoidRamp(500),
    StepDecay(every=7, factor=0.5),
]


@pytest.mark.parametrize("schedule", BOUNDED, ids=repr)
@given(step=steps)
def test_values_stay_within_their_range(schedule: Schedule, step: int) -> None:
    value = schedule(step)
    assert math.isfinite(value)
    assert -1e-12 <= value <= 1.0 + 1e-12


@pytest.mark.parametrize(
    ("schedule", "points"),
    [
        (LinearWarmup(10, delay=5), {0: 0.0, 5: 0.0, 10: 0.5, 15: 1.0, 99: 1.0}),
        (Cosine(100), {0: 1.0, 50: 0.5, 100: 0.0, 1000: 0.0}),
        (Cosine(10, warmup=10), {0: 0.1, 9: 1.0, 10: 1.0}),
        (StepDecay(milestones=[10, 20], factor=0.1), {0: 1.0, 10: 0.1, 25: 0.01}),
        (Cyclic(4), {0: 0.0, 1: 0.5, 2: 1.0, 3: 0.5, 4: 0.0}),
        (KLAnneal(100, cycles=1, ratio=0.5), {0: 0.0, 25: 0.5, 50: 1.0, 99: 1.0, 500: 1.0}),
        (SigmoidRamp(100), {0: 0.0, 100: 2 / (1 + math.exp(-10)) - 1}),
        (Constant(0.3), {0: 0.3, 10**9: 0.3}),
    ],
    ids=lambda value: repr(value) if isinstance(value, Schedule) else "",
)
def test_known_values(schedule: Schedule, points: dict[int, float]) -> None:
    for step, expected in points.items():
        assert schedule(step) == pytest.approx(expected, abs=1e-9), step


def test_multiplication_composes() -> None:
    product = 0.5 * LinearWarmup(10)
    assert isinstance(product, Product)
    assert product(5) == pytest.approx(0.25)
    assert (Cosine(10) * Constant(2.0))(0) == pytest.approx(2.0)
    assert repr(product) == "Constant(0.5) * LinearWarmup(steps=10, start=0.0, end=1.0, delay=0)"


def test_as_schedule() -> None:
    assert as_schedule(2)(7) == 2.0
    assert as_schedule(lambda step: step / 10)(5) == 0.5
    warm = LinearWarmup(3)
    assert as_schedule(warm) is warm
    with pytest.raises(TypeError, match="`r` must be a float, a Schedule or a callable"):
        as_schedule("fast", "`r`")


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: LinearWarmup(0), ValueError, "`steps` of LinearWarmup must be >= 1; got 0"),
        (
            lambda: Cosine(10, start=float("inf")),
            ValueError,
            "`start` of Cosine must be a finite float; got inf",
        ),
        (lambda: StepDecay(), ValueError, "exactly one of `every` or `milestones`"),
        (lambda: Cyclic(10, shape="saw"), ValueError, r"`shape` of Cyclic must be one of"),
        (lambda: KLAnneal(10, ratio=1.5), ValueError, r"`ratio` of KLAnneal must be in \[0, 1\]"),
        (lambda: SigmoidRamp(10, gamma=0.0), ValueError, "`gamma` of SigmoidRamp must be > 0"),
        (lambda: Lambda(3), TypeError, "`fn` of Lambda must be callable"),  # type: ignore
        (lambda: Constant("a"), TypeError, "`value` of Constant must be a finite float"),
        (lambda: StepDecay(every=0), ValueError, "`every` of StepDecay must be >= 1; got 0"),
        (
            lambda: StepDecay(milestones=5),  # type: ignore[arg-type]
            TypeError,
            r"`milestones` of StepDecay must be a list of ints >= 0 .*; got 5 \(int\)",
        ),
        (
            lambda: StepDecay(milestones=[10, -1]),
            ValueError,
            "each of `milestones` of StepDecay must be >= 0; got -1",
        ),
        (
            lambda: Cosine(10, warmup=20),
            ValueError,
            r"`warmup` of Cosine must be <= `steps` \(10\); got 20. `steps` counts the cosine",
        ),
        (
            lambda: Cosine(10) * float("nan"),
            ValueError,
            r"the factor multiplying Cosine\(steps=10, .*\) must be a finite float; got nan",
        ),
        (
            lambda: float("nan") * LinearWarmup(5),
            ValueError,
            r"the factor multiplying LinearWarmup\(.*\) must be a finite float; got nan",
        ),
        (
            lambda: as_schedule(float("nan"), "`weights['mse']`"),
            ValueError,
            r"`weights\['mse'\]` must be a finite float; got nan",
        ),
        (
            lambda: as_schedule(-1.0, "`w`", min_value=0.0),
            ValueError,
            r"`w` must be >= 0.0; got -1.0",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        build()


def test_negative_step_and_non_finite_lambda_are_errors() -> None:
    with pytest.raises(ValueError, match="`step` of Cosine must be >= 0; got -1"):
        Cosine(10)(-1)
    with pytest.raises(ValueError, match="value of schedule 'bad' at step 3"):
        Lambda(lambda step: float("nan"), name="bad")(3)


@pytest.mark.parametrize("step", ["a", 2.5, True, None])
def test_the_step_must_be_an_int(step: object) -> None:
    with pytest.raises(TypeError, match=r"`step` of LinearWarmup must be an int >= 0; got "):
        LinearWarmup(10)(step)  # type: ignore[arg-type]


def test_integer_steps_of_any_type_are_accepted() -> None:
    import numpy as np
    import torch

    assert LinearWarmup(10)(np.int64(5)) == 0.5  # type: ignore[arg-type]
    assert LinearWarmup(10)(torch.tensor(5)) == 0.5  # type: ignore[arg-type]
    assert Cosine(10, warmup=10)(0) == pytest.approx(0.1)  # warmup == steps is fine
