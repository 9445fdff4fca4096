"""Checks on saved state before it is loaded, so a mismatch is explained, not a stack trace."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["check_compatible"]


def check_compatible(
    saved: Mapping[str, Tensor], current: Mapping[str, Tensor], *, source: str
) -> None:
    """Raise ``ValueError`` listing every key or shape that differs between two state dicts."""
    problems: list[str] = []
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    if missing:
        problems.append(
            f"missing from the checkpoint: {missing[:5]}" + (" ..." if len(missing) > 5 else "")
        )
    if unexpected:
        problems.append(
            f"in the checkpoint but not in the model: {unexpected[:5]}"
            + (" ..." if len(unexpected) > 5 else "")
        )
    for key in sorted(set(saved) & set(current)):
        old, new = saved[key], current[key]
        if isinstance(old, Tensor) and isinstance(new, Tensor) and old.shape != new.shape:
            problems.append(
                f"{key!r}: checkpoint has shape {tuple(old.shape)}, model has {tuple(new.shape)}"
            )
    if problems:
        raise ValueError(
            f"cannot resume from {source}: the model has another shape than the one that was "
            "saved; " + "; ".join(problems[:8])
        )


def _few(keys: list[str]) -> str:
    return f"{keys[:5]}" + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
