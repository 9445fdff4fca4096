"""Optimizer groups: several (optimizer, losses) pairs stepped in turn (min-max training).

A GAN-style model returns its discriminator and generator losses every forward pass; the
trainer steps one group at a time on a fixed cycle, backpropagating only that group's losses
and stepping only its optimizer, e.g. ``k`` discriminator steps per generator step.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from multiloss._validation import check_int, check_loss_name, describe

__all__ = ["OptimizerGroup", "select_group"]


@dataclass
class OptimizerGroup:
    """An optimizer, the losses it minimizes, and how many consecutive steps it takes per cycle.

    Args:
        optimizer: Steps the parameters of this group.
        losses: Glob patterns of the loss names this group backpropagates (``"disc/*"``).
        steps: Consecutive steps this group takes in each cycle.
        scheduler: An optional LR scheduler, stepped with this group's steps.
        name: Names the group in its repr and in error messages; default ``group<i>``.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> OptimizerGroup(opt, losses=["disc/*"], steps=5, name="disc")
        OptimizerGroup(name='disc', losses=['disc/*'], steps=5, optimizer=SGD)
    """

    optimizer: torch.optim.Optimizer
    losses: str | Sequence[str] = "*"
    steps: int = 1
    scheduler: Any = None
    name: str | None = None
    patterns: tuple[str, ...] = field(init=False, repr=False)
    selects_all: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"`optimizer` of OptimizerGroup must be a torch.optim.Optimizer; got "
                f"{describe(self.optimizer)}"
            )
        patterns = [self.losses] if isinstance(self.losses, str) else list(self.losses)
        if not patterns:
            raise ValueError("`losses` of OptimizerGroup must name at least one loss pattern")
        self.patterns = tuple(
            check_loss_name(p, "each of `losses` of OptimizerGroup") for p in patterns
        )
        self.steps = check_int(self.steps, "`steps` of OptimizerGroup", min_value=1)
        self.selects_all = "*" in self.patterns

    def selects(self, name: str) -> bool:
        """Whether this group backpropagates the loss ``name``."""
        return self.selects_all or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def __repr__(self) -> str:
        return (
            f"OptimizerGroup(name={self.name!r}, losses={list(self.patterns)}, "
            f"steps={self.steps}, optimizer={type(self.optimizer).__name__})"
        )


def select_group(groups: Sequence[OptimizerGroup], step: int) -> OptimizerGroup:
    """The group that takes optimizer step number ``step`` (0-based) on the fixed cycle."""
    position = step % sum(group.steps for group in groups)
    for group in groups:
        if position < group.steps:
            return group
        position -= group.steps
    raise AssertionError("unreachable: position is always inside the cycle")
