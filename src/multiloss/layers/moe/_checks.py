"""Argument and input checks of ``MixtureOfExperts`` (every error names the parameter)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from multiloss._validation import (
    check_finite_float,
    check_float_tensor,
    check_int,
    check_values_in,
    describe,
)

__all__ = ["check_bool", "check_capacity_factor", "check_input", "check_jitter", "check_sizes"]

_NAME = "MixtureOfExperts"


def check_sizes(dim: Any, hidden: Any, num_experts: Any, top_k: Any) -> tuple[int, int, int, int]:
    """``dim``, ``hidden``, ``num_experts`` >= 1 and ``1 <= top_k <= num_experts``."""
    dim = check_int(dim, f"`dim` of {_NAME}", min_value=1)
    hidden = check_int(hidden, f"`hidden` of {_NAME}", min_value=1)
    num_experts = check_int(num_experts, f"`num_experts` of {_NAME}", min_value=1)
    top_k = check_int(top_k, f"`top_k` of {_NAME}", min_value=1)
    if top_k > num_experts:
        raise ValueError(f"`top_k` of {_NAME} must be <= num_experts={num_experts}; got {top_k}")
    return dim, hidden, num_experts, top_k


def check_capacity_factor(value: Any) -> float | None:
    """None (dropless) or a finite float > 0."""
    if value is None:
        return None
    return check_finite_float(
        value, f"`capacity_factor` of {_NAME}", min_value=0.0, strict_min=True
    )


def check_jitter(value: Any) -> float:
    """A float in [0, 1)."""
    jitter = check_finite_float(value, f"`jitter` of {_NAME}", min_value=0.0)
    if jitter >= 1.0:
        raise ValueError(f"`jitter` of {_NAME} must be in [0, 1); got {jitter}")
    return jitter


def check_bool(value: Any, what: str, *, allow_none: bool = False) -> bool | None:
    """A bool (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        expected = "a bool or None" if allow_none else "a bool"
        raise TypeError(f"`{what}` of {_NAME} must be {expected}; got {describe(value)}")
    return value


def check_input(x: Any, mask: Any, dim: int, *, needs_sequence: bool = False) -> None:
    """``x``: floating tensor with last dimension ``dim``; ``mask``: bool/int of ``x.shape[:-1]``.

    With ``needs_sequence`` (``sequence`` balancing), ``x`` must have a sequence axis:
    shape (..., sequence, dim).

    Apart from the values of an integer mask (one reduction, deferred on an accelerator,
    skipped under ``torch.compile``), only static metadata (dtype, shape) is read, so the checks
    cost nothing on the device and are folded away by ``torch.compile``.
    """
    check_float_tensor(x, f"input of {_NAME}")
    if x.dim() == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"input of {_NAME} must have last dimension dim={dim}; got shape {tuple(x.shape)}"
        )
    if needs_sequence and x.dim() < 3:
        raise ValueError(
            f"'sequence' balancing of {_NAME} needs inputs of shape (batch, sequence, dim); "
            f"got shape {tuple(x.shape)} (use 'switch' for tokens without sequences)"
        )
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.is_floating_point() or mask.is_complex():
        raise TypeError(
            f"`mask` of {_NAME} must be a bool (or 0/1 integer) Tensor marking real tokens; "
            f"got {describe(mask)}"
        )
    if mask.shape != x.shape[:-1]:
        raise ValueError(
            f"`mask` of {_NAME} must have the input's shape without its last dimension, "
            f"{tuple(x.shape[:-1])}; got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        # An integer mask must be 0/1: one min/max, read at once on the CPU and at the log
        # period on an accelerator (never a sync per call).
        check_values_in(
            mask,
            f"`mask` of {_NAME}",
            low=0,
            high=1,
            expected="hold 0 (padding) or 1 (a real token), or be a bool Tensor",
        )
