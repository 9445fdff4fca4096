"""Schedules: a weight or scale as a function of the training step.

One small family serves the whole library: ``Scaled(spec, r)`` in a loss spec, the
``Scheduled`` balancer, auxiliary-layer weights (a deep-supervision head that fades out, a KL
term that anneals in) and ``GradientReversal``'s warm-start ramp. A schedule is a callable
``step -> float`` with a readable ``repr``; schedules multiply (``0.1 * Cosine(1000)``).
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from multiloss._validation import (
    check_choice,
    check_finite_float,
    check_int,
    check_probability,
    describe,
)

__all__ = [
    "Constant",
    "Cosine",
    "Cyclic",
    "KLAnneal",
    "Lambda",
    "LinearWarmup",
    "Product",
    "Schedule",
    "SigmoidRamp",
    "StepDecay",
    "as_schedule",
    "check_step",
]


class Schedule(ABC):
    """A value as a function of the (optimizer) step. Subclasses implement ``value(step)``."""

    @abstractmethod
    def value(self, step: int) -> float:
        """The value at ``step`` (>= 0)."""

    def __call__(self, step: int) -> float:
        return self.value(check_step(step, f"`step` of {type(self).__name__}"))

    def __mul__(self, other: float | Schedule) -> Product:
        return Product(self, as_schedule(other, f"the factor multiplying {self!r}"))

    def __rmul__(self, other: float | Schedule) -> Product:
        return Product(as_schedule(other, f"the factor multiplying {self!r}"), self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._fields().items())
        return f"{type(self).__name__}({fields})"

    def _fields(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if not key.startswith("_")}


class Constant(Schedule):
    """Always ``value``.

    Example:
        >>> Constant(0.5)(1000)
        0.5
    """

    def __init__(self, value: float) -> None:
        self.value_ = check_finite_float(value, "`value` of Constant")

    def value(self, step: int) -> float:
        return self.value_

    def __repr__(self) -> str:
        return f"Constant({self.value_!r})"


class LinearWarmup(Schedule):
    """Linear ramp from ``start`` to ``end`` over ``steps``, after ``delay`` steps at ``start``.

    Example:
        >>> LinearWarmup(100)(50)
        0.5
    """

    def __init__(self, steps: int, *, start: float = 0.0, end: float = 1.0, delay: int = 0):
        self.steps = check_int(steps, "`steps` of LinearWarmup", min_value=1)
        self.start = check_finite_float(start, "`start` of LinearWarmup")
        self.end = check_finite_float(end, "`end` of LinearWarmup")
        self.delay = check_int(delay, "`delay` of LinearWarmup", min_value=0)

    def value(self, step: int) -> float:
        progress = min(max(step - self.delay, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * progress


class Cosine(Schedule):
    """Half-cosine from ``start`` to ``end`` over ``steps`` (after an optional linear warm-up).

    ``steps`` counts the cosine alone: with ``warmup`` the schedule reaches ``end`` at step
    ``warmup + steps``. A warm-up longer than the cosine (``warmup > steps``) is an error: it
    almost always means ``steps`` was meant to include the warm-up.

    Example:
        >>> round(Cosine(100, start=1.0, end=0.0)(50), 6)
        0.5
    """

    def __init__(self, steps: int, *, start: float = 1.0, end: float = 0.0, warmup: int = 0):
        self.steps = check_int(steps, "`steps` of Cosine", min_value=1)
        self.start = check_finite_float(start, "`start` of Cosine")
        self.end = check_finite_float(end, "`end` of Cosine")
        self.warmup = check_int(warmup, "`warmup` of Cosine", min_value=0)
        if self.warmup > self.steps:
            raise ValueError(
                f"`warmup` of Cosine must be <= `steps` ({self.steps}); got {self.warmup}. "
                "`steps` counts the cosine after the warm-up (the schedule ends at step "
                "warmup + steps): a longer warm-up usually means `steps` was meant to include it"
            )

    def value(self, step: int) -> float:
        if step < self.warmup:
            return self.start * (step + 1) / self.warmup
        progress = min((step - self.warmup) / self.steps, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class StepDecay(Schedule):
    """``start * factor ** (number of boundaries passed)``; boundaries every ``every`` steps or
    at the listed ``milestones``.

    Example:
        >>> StepDecay(every=10, factor=0.5)(25)
        0.25
    """

    def __init__(
        self,
        *,
        every: int | None = None,
        milestones: list[int] | None = None,
        factor: float = 0.1,
        start: float = 1.0,
    ) -> None:
        if (every is None) == (milestones is None):
            raise ValueError(
                "StepDecay needs exactly one of `every` or `milestones`; "
                f"got every={every!r}, milestones={milestones!r}"
            )
        self.every = (
            None if every is None else check_int(every, "`every` of StepDecay", min_value=1)
        )
        if milestones is not None and (
            isinstance(milestones, str | bytes) or not isinstance(milestones, Iterable)
        ):
            raise TypeError(
                "`milestones` of StepDecay must be a list of ints >= 0 (the steps where the "
                f"value decays); got {describe(milestones)}"
            )
        self.milestones = (
            None
            if milestones is None
            else sorted(
                check_int(m, "each of `milestones` of StepDecay", min_value=0) for m in milestones
            )
        )
        self.factor = check_finite_float(factor, "`factor` of StepDecay")
        self.start = check_finite_float(start, "`start` of StepDecay")

    def value(self, step: int) -> float:
        if self.every is not None:
            passed = step // self.every
        else:
            passed = sum(step >= m for m in self.milestones or [])
        return self.start * self.factor**passed


class Cyclic(Schedule):
    """Periodic between ``low`` and ``high`` (triangle or cosine wave), starting at ``low``.

    Example:
        >>> Cyclic(period=10)(5)
        1.0
    """

    def __init__(
        self, period: int, *, low: float = 0.0, high: float = 1.0, shape: str = "triangle"
    ) -> None:
        self.period = check_int(period, "`period` of Cyclic", min_value=2)
        self.low = check_finite_float(low, "`low` of Cyclic")
        self.high = check_finite_float(high, "`high` of Cyclic")
        self.shape = check_choice(shape, "`shape` of Cyclic", ("triangle", "cosine"))

    def value(self, step: int) -> float:
        phase = (step % self.period) / self.period
        if self.shape == "triangle":
            level = 1.0 - abs(2.0 * phase - 1.0)
        else:
            level = 0.5 * (1.0 - math.cos(2.0 * math.pi * phase))
        return self.low + (self.high - self.low) * level


class KLAnneal(Schedule):
    """KL-annealing ramp (Bowman et al. 2016; cyclical form of Fu et al. 2019).

    The run of ``steps`` is split into ``cycles`` equal cycles; in each, the value rises linearly
    from ``start`` to ``end`` over the first ``ratio`` of the cycle, then holds at ``end``.
    ``cycles=1`` is the classic monotonic warm-up; after ``steps`` the value stays at ``end``.

    Example:
        >>> s = KLAnneal(100, cycles=2, ratio=0.5)
        >>> s(0), s(25), s(49), s(50)
        (0.0, 1.0, 1.0, 0.0)
    """

    def __init__(
        self,
        steps: int,
        *,
        cycles: int = 1,
        ratio: float = 0.5,
        start: float = 0.0,
        end: float = 1.0,
    ) -> None:
        self.steps = check_int(steps, "`steps` of KLAnneal", min_value=1)
        self.cycles = check_int(cycles, "`cycles` of KLAnneal", min_value=1)
        self.ratio = check_probability(ratio, "`ratio` of KLAnneal", open_interval=False)
        if self.ratio == 0.0:
            raise ValueError("`ratio` of KLAnneal must be > 0; got 0.0")
        self.start = check_finite_float(start, "`start` of KLAnneal")
        self.end = check_finite_float(end, "`end` of KLAnneal")

    def value(self, step: int) -> float:
        if step >= self.steps:
            return self.end
        cycle_length = self.steps / self.cycles
        phase = (step % cycle_length) / cycle_length
        progress = min(phase / self.ratio, 1.0)
        return self.start + (self.end - self.start) * progress


class SigmoidRamp(Schedule):
    """``high * (2 / (1 + exp(-gamma * p)) - 1)`` with ``p = step / steps`` clipped to [0, 1].

    The warm-start schedule of domain-adversarial training (Ganin & Lempitsky 2015, gamma 10):
    it starts at 0 so the adversary's noisy early gradient cannot derail the features.

    Example:
        >>> SigmoidRamp(1000)(0)
        0.0
    """

    def __init__(self, steps: int, *, gamma: float = 10.0, high: float = 1.0) -> None:
        self.steps = check_int(steps, "`steps` of SigmoidRamp", min_value=1)
        self.gamma = check_finite_float(
            gamma, "`gamma` of SigmoidRamp", min_value=0.0, strict_min=True
        )
        self.high = check_finite_float(high, "`high` of SigmoidRamp")

    def value(self, step: int) -> float:
        progress = min(step / self.steps, 1.0)
        return self.high * (2.0 / (1.0 + math.exp(-self.gamma * progress)) - 1.0)


class Product(Schedule):
    """The product of two schedules (what ``a * b`` builds)."""

    def __init__(self, left: Schedule, right: Schedule) -> None:
        self.left = left
        self.right = right

    def value(self, step: int) -> float:
        return self.left(step) * self.right(step)

    def __repr__(self) -> str:
        return f"{self.left!r} * {self.right!r}"


class Lambda(Schedule):
    """Wrap any callable ``step -> float``; the result is checked to be finite.

    Example:
        >>> Lambda(lambda step: 1.0 / (1 + step), name="inverse")(1)
        0.5
    """

    def __init__(self, fn: Callable[[int], float], *, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` of Lambda must be callable; got {describe(fn)}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")

    def value(self, step: int) -> float:
        return check_finite_float(self.fn(step), f"value of schedule {self.name!r} at step {step}")

    def __repr__(self) -> str:
        return f"Lambda({self.name})"


def check_step(step: Any, what: str = "`step`") -> int:
    """Return ``step`` as an int >= 0 (any integer type: ``int``, ``numpy.int64``, an integer
    0-dim tensor); a float or a bool is a TypeError naming ``what``."""
    if isinstance(step, bool):
        raise TypeError(f"{what} must be an int >= 0; got {describe(step)}")
    try:
        index = operator.index(step)
    except TypeError:
        raise TypeError(f"{what} must be an int >= 0; got {describe(step)}") from None
    if index < 0:
        raise ValueError(f"{what} must be >= 0; got {index}")
    return index


def as_schedule(value: Any, what: str = "schedule", *, min_value: float | None = None) -> Schedule:
    """A float becomes ``Constant``, a callable ``Lambda``; a ``Schedule`` is returned as is.

    Args:
        value: The float, ``Schedule`` or callable of the step.
        what: How to name ``value`` in errors, e.g. ``"`weights['mse']` of Trainer"``: a NaN
            is reported under this name, not as ``Constant``'s own parameter.
        min_value: Lower bound for a float (schedules and callables are checked by their users
            when they are read).
    """
    if isinstance(value, Schedule):
        if min_value is not None and isinstance(value, Constant):
            check_finite_float(value.value_, what, min_value=min_value)
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Constant(check_finite_float(value, what, min_value=min_value))
    if callable(value):
        return Lambda(value)
    raise TypeError(
        f"{what} must be a float, a Schedule or a callable of the step; got {describe(value)}"
    )
