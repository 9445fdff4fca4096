"""Helpers the layers share: picking a tensor out of a module's output, a target out of a batch.

Both turn a common mistake (a wrapped module returning a tuple, a target key misspelt) into an
error that names the layer, the parameter, what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from multiloss._validation import describe

__all__ = ["Selector", "check_selector", "describe_output", "read_target", "select_tensor"]

#: Where to find a tensor in a structure: an index into a tuple/list, a key into a mapping, or
#: a callable that returns it.
Selector = int | str | Callable[[Any], Tensor]


def check_selector(value: Any, what: str) -> Selector:
    """Return ``value`` if it is an int, a non-empty str or a callable."""
    if isinstance(value, bool) or not (isinstance(value, int | str) or callable(value)):
        raise TypeError(
            f"{what} must be an int index, a str key or a callable; got {describe(value)}"
        )
    if isinstance(value, str) and not value:
        raise ValueError(f"{what} must be a non-empty key; got ''")
    selector: Selector = value
    return selector


def describe_output(value: Any) -> str:
    """Like ``describe``, but a tuple, list or dict is described by its parts' types and shapes
    rather than by the numbers inside them."""
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))}"
    if isinstance(value, tuple | list):
        parts = ", ".join(
            f"Tensor{tuple(item.shape)}" if isinstance(item, Tensor) else type(item).__name__
            for item in value[:6]
        )
        more = ", ..." if len(value) > 6 else ""
        return f"a {type(value).__name__} ({parts}{more})"
    return describe(value)


def _lookup(structure: Any, selector: Selector) -> Any:
    """``structure[selector]`` (or ``selector(structure)``); raises LookupError when absent."""
    if callable(selector):
        return selector(structure)
    if isinstance(selector, str):
        if not isinstance(structure, Mapping):
            raise LookupError(
                f"a key {selector!r} needs a mapping; got {describe_output(structure)}"
            )
        if selector not in structure:
            raise LookupError(f"no key {selector!r}; the keys are {sorted(map(str, structure))}")
        return structure[selector]
    if isinstance(structure, Mapping) or not isinstance(structure, Sequence):
        raise LookupError(
            f"an index {selector} needs a tuple or list; got {describe_output(structure)}"
        )
    if not -len(structure) <= selector < len(structure):
        raise LookupError(f"index {selector} is out of range for a sequence of {len(structure)}")
    return structure[selector]


def select_tensor(
    output: Any, selector: Selector | None, who: str, purpose: str = "to regularize"
) -> Tensor:
    """The floating-point tensor to work on, out of what a module produced.

    Args:
        output: What the module returned (or what the layer was called with).
        selector: None when ``output`` itself must be the tensor; else where to find it.
        who: How to name the producer in errors, e.g. "the module wrapped by
            ActivationRegularizer (ReLU)".
        purpose: What the tensor is for, in errors.

    Raises:
        TypeError: There is no floating-point tensor there.
    """
    found = output
    if selector is not None:
        try:
            found = _lookup(output, selector)
        except LookupError as error:
            raise TypeError(f"{who} produced no tensor at `select`={selector!r}: {error}") from None
    if isinstance(found, Tensor) and found.is_floating_point():
        return found
    hint = (
        "; pass `select=` (an index, a key or a callable) to pick the tensor out of it"
        if selector is None and isinstance(found, tuple | list | Mapping)
        else ""
    )
    raise TypeError(
        f"{who} produced no tensor {purpose}: expected a floating-point Tensor, got "
        f"{describe_output(found)}{hint}"
    )


def read_target(batch: Any, selector: Selector, who: str) -> Tensor:
    """The target ``selector`` names in ``batch`` (a mapping, a tuple/list, or anything a
    callable selector understands).

    Raises:
        ValueError: The batch holds no such target; the message lists what it does hold.
    """
    try:
        found = _lookup(batch, selector)
    except LookupError as error:
        raise ValueError(f"{who} could not find its target in the batch: {error}") from None
    if not isinstance(found, Tensor):
        raise TypeError(
            f"{who}: the target {selector!r} of the batch is {describe_output(found)}, not a Tensor"
        )
    return found
