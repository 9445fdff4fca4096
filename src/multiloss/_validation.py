"""Argument checks shared by the whole library.

Every error says three things: which parameter (or which loss), what was expected, and the value
that was found. Keeping the wording in one place keeps it consistent across modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_finite_float",
    "check_int",
    "check_loss_name",
    "check_loss_tensor",
    "check_probability",
    "describe",
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
