"""The spec forms: ``Automatic``, ``Port``, ``Attach``, ``Scaled`` and ``Maximize``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from multiloss._validation import check_finite_float, check_loss_name
from multiloss.schedules import Lambda, Schedule
from multiloss.spec.base import Spec, SpecLike, attach_term, flatten
from multiloss.spec.term import Term

__all__ = ["Attach", "Automatic", "AutomaticSpec", "Maximize", "Port", "Scaled"]


class AutomaticSpec(Spec):
    """Attach a loss to outputs, chosen from the module that produced each and its target.

    Use the instance ``multiloss.Automatic``: alone it covers every output port; inside a list
    it covers the ports no other term names; called with port names, ``Automatic("a", "b")``,
    it covers just those. The rules are in ``docs/specs.md`` and ``multiloss.explain`` shows
    which one fired for each port.

    Example:
        >>> Automatic
        Automatic
        >>> Automatic("class", "depth")
        Automatic('class', 'depth')
    """

    def __init__(self, *ports: str) -> None:
        for port in ports:
            check_loss_name(port, "each port of Automatic")
        if len(set(ports)) != len(ports):
            raise ValueError(f"the ports of Automatic must be distinct; got {ports}")
        self.ports = ports

    def __call__(self, *ports: str) -> AutomaticSpec:
        """``Automatic`` restricted to ``ports``."""
        return AutomaticSpec(*ports)

    def terms(self) -> tuple[Term, ...]:
        if not self.ports:
            return (Term("automatic", None),)
        return tuple(Term("automatic", port) for port in self.ports)

    def __repr__(self) -> str:
        if not self.ports:
            return "Automatic"
        return f"Automatic({', '.join(repr(port) for port in self.ports)})"


#: Attach a loss to every output, chosen from its layer (see :class:`AutomaticSpec`).
Automatic = AutomaticSpec()


class Port(Spec):
    """The output port ``port`` already is a loss; an array-valued one is summed.

    Args:
        port: The output's name (a dict key, ``"output"``, or ``"output0"``, ``"output1"``...).
        name: The name the loss is reported under (default: the port's name).

    Example:
        >>> Port("kl")
        Port('kl')
    """

    def __init__(self, port: str, *, name: str | None = None) -> None:
        self.port = check_loss_name(port, "`port` of Port")
        self.name = None if name is None else check_loss_name(name, "`name` of Port")

    def terms(self) -> tuple[Term, ...]:
        return (Term("port", self.port, name=self.name),)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name is not None else ""
        return f"Port({self.port!r}{name})"


class Attach(Spec):
    """Apply ``loss`` to the output port ``port``; the target is ``batch[target or port]``.

    ``loss`` is anything callable as ``loss(input, target)``, or ``loss(input)`` alone for a
    target-free loss such as a regularizer on an output (read from its signature). A loss
    returning a dict contributes each entry as a sub-loss ``<name>/<key>``, all with this
    term's weight; an array-valued loss is summed.

    Args:
        port: The output's name.
        loss: A loss module (``multiloss.losses``, ``torch.nn``) or function.
        target: The batch key of the target, when it is not the port's name.
        name: The name the loss is reported under (default: the port's name).

    Example:
        >>> from multiloss.losses import MeanAbsolute
        >>> Attach("depth", MeanAbsolute(), target="depth_gt")
        Attach('depth', MeanAbsolute(), target='depth_gt')
    """

    def __init__(
        self,
        port: str,
        loss: Callable[..., Any],
        *,
        target: str | None = None,
        name: str | None = None,
    ) -> None:
        self._term = attach_term(port, loss, target=target, name=name)
        self.port = port
        self.loss = loss
        self.target = target
        self.name = name

    def terms(self) -> tuple[Term, ...]:
        return (self._term,)

    def __repr__(self) -> str:
        options = "".join(
            f", {key}={value!r}"
            for key, value in (("target", self.target), ("name", self.name))
            if value is not None
        )
        return f"Attach({self.port!r}, {self.loss!r}{options})"


class Scaled(Spec):
    """Multiply every loss of ``spec`` by ``factor``; a negative factor maximizes.

    Args:
        spec: Any spec (a list scales all its terms).
        factor: A finite float, or a schedule of the training step (a
            ``multiloss.schedules.Schedule`` such as ``LinearWarmup(1000)`` or
            ``KLAnneal(10_000)``, or any callable ``step -> float``).

    Example:
        >>> from multiloss.schedules import LinearWarmup
        >>> Scaled(Port("kl"), LinearWarmup(100)).terms()[0].weight(50)
        0.5
    """

    def __init__(self, spec: SpecLike, factor: float | Schedule | Callable[[int], float]) -> None:
        self._inner = flatten(spec)
        self.spec = spec
        self.factor: float | Schedule
        if isinstance(factor, Schedule):
            self.factor = factor
        elif callable(factor) and not isinstance(factor, type):
            self.factor = Lambda(factor)
        else:
            self.factor = check_finite_float(factor, "`factor` of Scaled")

    def terms(self) -> tuple[Term, ...]:
        return tuple(term.scaled(self.factor) for term in self._inner)

    def __repr__(self) -> str:
        return f"Scaled({self.spec!r}, {self.factor!r})"


class Maximize(Scaled):
    """Maximize ``spec``: ``Scaled(spec, -1)``, reported as the positive value with weight -1.

    Example:
        >>> Maximize(Port("entropy")).terms()[0].weight(0)
        -1.0
        >>> Maximize(Maximize(Port("x"))) == Port("x")
        True
    """

    def __init__(self, spec: SpecLike) -> None:
        super().__init__(spec, -1.0)

    def __repr__(self) -> str:
        return f"Maximize({self.spec!r})"
