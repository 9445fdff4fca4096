"""Argument checks shared by the whole library.

Every error says three things: which parameter (or which loss), what was expected, and the value
that was found. Keeping the wording in one place keeps it consistent across modules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = [
    "check_bool",
    "check_choice",
    "check_class_indices",
    "check_finite_float",
    "check_float_tensor",
    "check_int",
    "check_loss_name",
    "check_loss_tensor",
    "check_path",
    "check_probability",
    "check_values_in",
    "describe",
    "pending_value_checks",
    "run_deferred_value_checks",
]

T = TypeVar("T")


def describe(value: Any) -> str:
    """A short, readable description of ``value`` for error messages."""
    if isinstance(value, Tensor):
        shape = tuple(value.shape)
        return f"Tensor(shape={shape}, dtype={value.dtype}, device={value.device})"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def check_finite_float(
    value: Any,
    what: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    strict_min: bool = False,
) -> float:
    """Return ``value`` as a float, or raise naming ``what``.

    Args:
        value: The candidate number (bools are rejected: ``True`` is not a weight).
        what: How to name it in the error, e.g. ``"`weight` for loss 'aux/depth'"``.
        min_value: Lower bound, inclusive unless ``strict_min``.
        max_value: Upper bound, inclusive.
        strict_min: Whether ``min_value`` itself is excluded.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is not finite or is out of range.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a finite float; got {describe(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{what} must be a finite float; got {result}")
    if min_value is not None:
        if strict_min and result <= min_value:
            raise ValueError(f"{what} must be > {min_value}; got {result}")
        if not strict_min and result < min_value:
            raise ValueError(f"{what} must be >= {min_value}; got {result}")
    if max_value is not None and result > max_value:
        raise ValueError(f"{what} must be <= {max_value}; got {result}")
    return result


def check_probability(value: Any, what: str, *, open_interval: bool = True) -> float:
    """Return ``value`` as a float in (0, 1) (or [0, 1] when not ``open_interval``)."""
    result = check_finite_float(value, what)
    inside = 0.0 < result < 1.0 if open_interval else 0.0 <= result <= 1.0
    if not inside:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{what} must be in {bounds}; got {result}")
    return result


def check_int(value: Any, what: str, *, min_value: int | None = None) -> int:
    """Return ``value`` as an int (not a bool), at least ``min_value``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int; got {describe(value)}")
    if min_value is not None and value < min_value:
        raise ValueError(f"{what} must be >= {min_value}; got {value}")
    return value


def check_float_tensor(value: Any, what: str) -> Tensor:
    """Return ``value`` if it is a floating-point Tensor, else TypeError naming ``what``.

    Example:
        >>> check_float_tensor([1.0], "`x` of f")
        Traceback (most recent call last):
        ...
        TypeError: `x` of f must be a floating-point Tensor; got [1.0] (list)
    """
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(f"{what} must be a floating-point Tensor; got {describe(value)}")
    return value


def check_bool(value: Any, what: str) -> bool:
    """Return ``value`` if it is a bool (``1`` and ``"yes"`` are not)."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool; got {describe(value)}")
    return value


def check_path(value: Any, what: str) -> Path:
    """Return ``value`` as a ``Path`` if it is a ``str`` or ``os.PathLike``, else TypeError."""
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise TypeError(f"{what} must be a path (a str or a pathlib.Path); got {describe(value)}")


def check_choice(value: T, what: str, allowed: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``allowed``; the error lists the allowed set."""
    options = list(allowed)
    if value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise ValueError(f"{what} must be one of {{{listed}}}; got {value!r}")
    return value


def check_loss_name(name: Any, what: str = "`name`") -> str:
    """Return ``name`` if it is a non-empty string without surrounding whitespace."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a non-empty string; got {describe(name)}")
    if not name or name != name.strip():
        raise ValueError(
            f"{what} must be a non-empty string without leading or trailing spaces; got {name!r}"
        )
    return name


def check_loss_tensor(
    value: Any, name: str, *, device: torch.device | None = None, where: str = ""
) -> Tensor:
    """Return ``value`` as a 0-dim floating-point tensor, or raise naming the loss.

    A one-element tensor of any shape is accepted and reshaped to 0-dim, since ``x.sum(1)``
    on a batch of one and ``mean(dim=0, keepdim=True)`` are common ways to end up with one.

    Args:
        value: What was given as the loss.
        name: The loss name, for the message.
        device: If given, the device the loss must live on.
        where: Extra context for the message (e.g. the module path that emitted it).
    """
    origin = f" (from {where})" if where else ""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"loss {name!r}{origin} must be a scalar torch.Tensor; got {describe(value)}"
        )
    if not (value.is_floating_point() or value.is_complex()):
        raise TypeError(
            f"loss {name!r}{origin} must be a floating-point tensor; got dtype {value.dtype}"
        )
    if value.is_complex():
        raise TypeError(f"loss {name!r}{origin} must be real-valued; got dtype {value.dtype}")
    if value.dim() != 0:
        if value.numel() != 1:
            raise ValueError(
                f"loss {name!r}{origin} must be a scalar (0-dim or one element); got shape "
                f"{tuple(value.shape)}; reduce it first, e.g. with .mean() or .sum()"
            )
        value = value.reshape(())
    tensor: Tensor = value
    if device is not None and tensor.device != device:
        raise ValueError(
            f"loss {name!r}{origin} must be on device {device}; got a tensor on {tensor.device}"
        )
    return tensor


# -- checks on the values inside tensors ---------------------------------------------------------
#
# Losses and layers run every step, so a check on the values of an input (probabilities in
# [0, 1], class indices below the number of classes) costs one fused reduction (``aminmax``) and
# never stalls an accelerator:
#
# * on the CPU the two numbers are read at once (reading a CPU tensor costs nothing) and a bad
#   value raises right there;
# * on an accelerator the running minimum and maximum stay on the device, keyed by what was
#   checked, until :func:`run_deferred_value_checks` reads them all with one sync (the training
#   loop calls it where it reads the device anyway: at the log period);
# * under ``torch.compile`` nothing is checked (a data-dependent branch would break the graph).
#
# NaN is not a range error here: it propagates through the min and max and is left to the
# non-finite-loss check, which names the loss.

#: key -> (running min, running max, low, high, what, expectation) of checks waiting on a
#: device; ``what`` is built when a failure is reported.
_DEFERRED: dict[Hashable, tuple[Tensor, Tensor, float, float, Callable[[], str] | str, str]] = {}


def _text(what: Callable[[], str] | str) -> str:
    return what if isinstance(what, str) else what()


def _read_at_once(value: Tensor) -> bool:
    """Whether reading ``value`` costs nothing (a CPU tensor): then a check raises at once."""
    return value.device.type == "cpu"


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def check_values_in(
    value: Tensor,
    what: str | Callable[[], str],
    *,
    low: float,
    high: float,
    expected: str | None = None,
    key: Hashable | None = None,
) -> None:
    """Raise ValueError if a value of ``value`` lies outside ``[low, high]``.

    One ``aminmax`` reduction; on an accelerator the check is deferred (see above).

    Args:
        value: The tensor to check (detached here).
        what: How to name it, e.g. ``"`target` of BinaryCrossEntropy(input='logits')"``, or a
            function that builds that text (called only to report a failure: a module's
            repr costs microseconds on every call).
        low: Smallest allowed value.
        high: Largest allowed value.
        expected: The expectation in words (default ``"hold values in [low, high]"``).
        key: What identifies the check among those deferred on a device (default: ``what``,
            which must then be a string); one entry per key, however many calls.

    Example:
        >>> import torch
        >>> check_values_in(torch.tensor([0.5, 2.0]), "`target` of f", low=0.0, high=1.0)
        Traceback (most recent call last):
        ...
        ValueError: `target` of f must hold values in [0, 1]; got values from 0.5 to 2
    """
    if value.numel() == 0 or value.dtype == torch.bool or torch.compiler.is_compiling():
        return
    expectation = expected or f"hold values in [{_format_number(low)}, {_format_number(high)}]"
    detached = value.detach()
    if _read_at_once(value):
        if low == -math.inf:  # a bound on one side: one reduction, one number read
            lo, hi = low, float(detached.amax())
        elif high == math.inf:
            lo, hi = float(detached.amin()), high
        else:
            lo, hi = (float(v) for v in torch.aminmax(detached))
        if lo < low or hi > high:
            raise ValueError(
                f"{_text(what)} must {expectation}; got values from {_format_number(lo)} to "
                f"{_format_number(hi)}"
            )
        return
    smallest, largest = torch.aminmax(detached)
    if key is None:
        if not isinstance(what, str):
            raise TypeError("check_values_in needs a `key` when `what` is a function")
        key = what
    previous = _DEFERRED.get(key)
    if previous is not None:
        smallest = torch.minimum(previous[0], smallest)
        largest = torch.maximum(previous[1], largest)
    _DEFERRED[key] = (smallest, largest, low, high, what, expectation)


def check_class_indices(
    target: Tensor,
    num_classes: int,
    what: str | Callable[[], str],
    *,
    ignore_index: int | None = None,
    key: Hashable | None = None,
) -> None:
    """Raise ValueError if a class index is outside ``[0, num_classes)`` (``ignore_index`` is
    allowed wherever it appears). One reduction; deferred on an accelerator like
    :func:`check_values_in`.

    Example:
        >>> import torch
        >>> check_class_indices(torch.tensor([0, 7, -100]), 3, "`t`", ignore_index=-100)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `t` must hold class indices in [0, 3) for 3 classes ...; got 7 at 1 of 3 ...
    """
    if target.numel() == 0 or torch.compiler.is_compiling():
        return
    indices = target.detach()
    # An ignore_index inside [0, classes) is a class like any other; outside, it is allowed.
    ignored = ignore_index is not None and not 0 <= ignore_index < num_classes
    allowed = f" (or ignore_index {ignore_index})" if ignored else ""
    expected = f"hold class indices in [0, {num_classes}) for {num_classes} classes{allowed}"
    if not _read_at_once(indices):
        if ignored and ignore_index is not None:
            indices = indices.masked_fill(indices.eq(ignore_index), 0)
        check_values_in(indices, what, low=0, high=num_classes - 1, expected=expected, key=key)
        return
    smallest, largest = (int(v) for v in torch.aminmax(indices))
    if smallest >= 0 and largest < num_classes:
        return  # the common case: one reduction, no masking
    if ignored and ignore_index is not None:
        indices = indices[indices.ne(ignore_index)]
        if indices.numel() == 0:
            return
        smallest, largest = (int(v) for v in torch.aminmax(indices))
        if smallest >= 0 and largest < num_classes:
            return
    bad = indices[(indices < 0) | (indices >= num_classes)]
    found = sorted(set(bad.unique().tolist()))
    shown = ", ".join(str(v) for v in found[:5]) + (", ..." if len(found) > 5 else "")
    raise ValueError(
        f"{_text(what)} must {expected}; got {shown} at {bad.numel()} of {target.numel()} positions"
    )


def pending_value_checks() -> int:
    """How many value checks wait on a device for :func:`run_deferred_value_checks`."""
    return len(_DEFERRED)


def run_deferred_value_checks() -> None:
    """Read every value check deferred on a device (one sync) and raise the first failure.

    The checks are cleared either way. Call it where the device is read anyway (the log
    period); on the CPU there is never anything pending.
    """
    if not _DEFERRED:
        return
    pending = dict(_DEFERRED)
    _DEFERRED.clear()
    by_device: dict[torch.device, list[Hashable]] = {}
    for key, entry in pending.items():
        by_device.setdefault(entry[0].device, []).append(key)
    numbers: dict[Hashable, tuple[float, float]] = {}
    for keys in by_device.values():  # one read per device (almost always one device)
        stacked = torch.stack(
            [torch.stack([pending[k][0].float(), pending[k][1].float()]) for k in keys]
        )
        numbers.update(zip(keys, (tuple(pair) for pair in stacked.cpu().tolist()), strict=True))
    for key, (_, _, low, high, what, expectation) in pending.items():
        lo, hi = numbers[key]
        if lo < low or hi > high:
            raise ValueError(
                f"{_text(what)} must {expectation}; got values from {_format_number(lo)} to "
                f"{_format_number(hi)} (found at a deferred check: on an accelerator the values "
                "are read at the log period, so it may have happened a few steps ago)"
            )
