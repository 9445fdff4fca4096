"""``Term``: one loss of a spec, the flat form every spec reduces to.

A spec is a tree (lists, ``Scaled`` around ``Maximize`` around ``Attach``...). Before anything
runs it is flattened into terms: which port, which loss (or none: the port already is a loss,
or Automatic decides later), where the target comes from, and the scale as a constant times a
product of schedules. Flattening is what makes nested scales multiply and a double
``Maximize`` cancel, and it is what specs compare by.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

from multiloss._validation import check_loss_name, describe
from multiloss.schedules import Schedule

__all__ = ["Term", "TermKind", "TargetMode", "describe_loss", "target_mode"]

TermKind = Literal["port", "attach", "automatic"]
#: Whether a loss takes a target: always, only when the batch has one, or never.
TargetMode = Literal["required", "optional", "none"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def target_mode(loss: Callable[..., Any], what: str) -> TargetMode:
    """Read from ``loss``'s signature whether it is ``(input, target)`` or ``(input)``.

    Two required positional parameters: the target is required. One required and room for a
    second (a default, or ``*args``): the target is passed when the batch has it. One only:
    the loss is target-free (a regularizer on an output). Callables whose signature cannot be
    read (some builtins) are treated as optional.
    """
    function = loss.forward if isinstance(loss, nn.Module) else loss
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return "optional"
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    variadic = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters)
    capacity = math.inf if variadic else len(positional)
    if len(required) > 2 or capacity < 1:
        raise TypeError(
            f"{what} must take (input, target) or (input) alone; got {describe(loss)} with "
            f"signature {signature}"
        )
    if len(required) == 2:
        return "required"
    if capacity >= 2:
        return "optional"
    return "none"


@dataclass(frozen=True)
class Term:
    """One loss of a flattened spec.

    Attributes:
        kind: ``"port"`` (the output is the loss), ``"attach"`` (``loss`` is applied to it) or
            ``"automatic"`` (the loss is chosen from the module that produced the output).
        port: The output port; None for an Automatic that covers every port not named
            elsewhere in the spec.
        loss: The attached loss (``"attach"`` only). Terms compare losses by identity.
        target: Batch key of the target; None means the port's own name.
        name: The reported loss name; None means the port's name.
        factor: Constant scale (negative: maximized).
        schedules: Schedules of the step that multiply ``factor``.
        mode: Whether ``loss`` takes a target (see :func:`target_mode`).
    """

    kind: TermKind
    port: str | None
    loss: Callable[..., Any] | None = field(default=None, compare=False)
    target: str | None = None
    name: str | None = None
    factor: float = 1.0
    schedules: tuple[Schedule, ...] = ()
    mode: TargetMode = "none"
    # Losses compare by identity (two MeanSquared() are different terms); ids are stable
    # because the term holds the loss alive.
    loss_id: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.port is not None:
            check_loss_name(self.port, "`port`")
        if self.name is not None:
            check_loss_name(self.name, "`name`")
        if self.target is not None:
            check_loss_name(self.target, "`target`")
        if self.loss is not None and self.loss_id is None:
            object.__setattr__(self, "loss_id", id(self.loss))

    @property
    def target_key(self) -> str | None:
        """The batch key of the target (None for an unrestricted Automatic)."""
        return self.target if self.target is not None else self.port

    def scaled(self, factor: float | Schedule) -> Term:
        """This term with its scale multiplied by ``factor``."""
        if isinstance(factor, Schedule):
            return replace(self, schedules=(*self.schedules, factor))
        return replace(self, factor=self.factor * factor)

    def weight(self, step: int) -> float:
        """The scale at ``step``: ``factor`` times every schedule's value."""
        value = self.factor
        for schedule in self.schedules:
            value *= schedule(step)
        return value

    def describe(self) -> str:
        """The term in spec syntax, e.g. ``Scaled(Attach('y', MeanSquared()), 0.5)``."""
        if self.kind == "port":
            text = f"Port({self.port!r})"
        elif self.kind == "attach":
            text = f"Attach({self.port!r}, {describe_loss(self.loss)})"
        else:
            text = "Automatic" if self.port is None else f"Automatic({self.port!r})"
        if self.factor == -1.0 and not self.schedules:
            return f"Maximize({text})"
        scale = [f"{self.factor:g}"] if self.factor != 1.0 or not self.schedules else []
        scale += [repr(schedule) for schedule in self.schedules]
        return text if scale == ["1"] else f"Scaled({text}, {' * '.join(scale)})"


def describe_loss(loss: Any, width: int = 80) -> str:
    """A loss in one short line: its repr, or a function's name (``activity``, ``<lambda>``)."""
    if inspect.isfunction(loss) or inspect.ismethod(loss) or inspect.isbuiltin(loss):
        return str(getattr(loss, "__qualname__", getattr(loss, "__name__", "function")))
    text = " ".join(repr(loss).split())
    if len(text) > width:
        text = f"{type(loss).__name__}(...)"
    return text
