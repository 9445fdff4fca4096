"""``Spec``, the base of every loss spec, and ``flatten``, which turns any spec into terms.

Besides the spec classes, two shorthands are accepted wherever a spec is: a port name
(``"loss"`` is ``Port("loss")``) and a ``{port: loss}`` dict (one ``Attach`` per entry). Lists
and tuples of specs are minimized jointly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias, Union

from torch import Tensor

from multiloss._validation import check_loss_name, describe
from multiloss.spec.term import Term, target_mode

__all__ = ["Spec", "SpecLike", "attach_term", "flatten"]

#: Anything accepted as a spec: a spec object, a port name, a ``{port: loss}`` dict, or a list
#: or tuple of these.
SpecLike: TypeAlias = Union["Spec", str, Mapping[str, Callable[..., Any]], Sequence["SpecLike"]]

_FORMS = (
    "Automatic, Port(...), Attach(...), Scaled(...), Maximize(...), a port name (str), "
    "a {port: loss} dict, or a list of these"
)


class Spec(ABC):
    """Base class of the loss specs.

    Specs are values: two specs are equal when they flatten to the same terms, so
    ``Maximize(Maximize(s)) == s`` and ``Scaled(Scaled(s, 2.0), 3.0) == Scaled(s, 6.0)``.
    Losses inside terms compare by identity.
    """

    @abstractmethod
    def terms(self) -> tuple[Term, ...]:
        """The flat terms this spec stands for."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spec | list | tuple | str | Mapping):
            return NotImplemented
        try:
            return self.terms() == flatten(other)
        except (TypeError, ValueError):
            return False

    def __hash__(self) -> int:
        return hash(self.terms())


def attach_term(
    port: str,
    loss: Callable[..., Any],
    *,
    target: str | None = None,
    name: str | None = None,
    where: str = "Attach",
) -> Term:
    """The term of ``Attach(port, loss, target=, name=)``, validated with ``where`` in errors."""
    check_loss_name(port, f"`port` of {where}")
    if isinstance(loss, Spec) or not callable(loss):
        hint = ""
        if isinstance(loss, Spec):
            hint = "; wrap the whole Attach instead, e.g. Scaled(Attach(port, loss), r)"
        raise TypeError(
            f"`loss` of {where} must be a loss module or a function of (input, target) or "
            f"(input); got {describe(loss)}{hint}"
        )
    if target is not None:
        check_loss_name(target, f"`target` of {where}")
    if name is not None:
        check_loss_name(name, f"`name` of {where}")
    mode = target_mode(loss, f"`loss` of {where}")
    return Term("attach", port, loss, target=target, name=name, mode=mode)


def flatten(spec: Any) -> tuple[Term, ...]:
    """The terms of any spec-like value, in order.

    Raises:
        TypeError: ``spec`` is of a type that is not a spec (the message lists the forms).

    Example:
        >>> from multiloss.spec import Maximize, Port, Scaled
        >>> [t.describe() for t in flatten(["loss", Scaled(Maximize(Port("gain")), 0.5)])]
        ["Port('loss')", "Scaled(Port('gain'), -0.5)"]
    """
    if isinstance(spec, Spec):
        return spec.terms()
    if isinstance(spec, str):
        check_loss_name(spec, "a port name given as a spec")
        return (Term("port", spec),)
    if isinstance(spec, Mapping):
        terms = []
        for port, loss in spec.items():
            if not isinstance(port, str):
                raise TypeError(
                    f"the keys of a {{port: loss}} spec must be port names (str); got "
                    f"{describe(port)}"
                )
            terms.append(attach_term(port, loss, where=f"the {{port: loss}} entry {port!r}"))
        return tuple(terms)
    if isinstance(spec, list | tuple):
        return tuple(term for item in spec for term in flatten(item))
    hint = ""
    if callable(spec) and not isinstance(spec, Tensor):
        hint = (
            f"; to attach a loss to an output, write Attach('output', {type(spec).__name__}(...))"
        )
    raise TypeError(f"a loss spec must be {_FORMS}; got {describe(spec)}{hint}")
