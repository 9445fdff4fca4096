"""Property checks every ``AuxiliaryLossModule`` must pass, and the case type that feeds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import multiloss as ml


@dataclass
class AuxCase:
    """One auxiliary-loss layer configuration to check.

    Attributes:
        id: Test id.
        make: Builds the layer (fresh each time), with any constructor keyword arguments.
        inputs: Builds the positional inputs of one forward call.
        call: How to call the layer (default ``layer(*inputs)``).
        kwargs: Keyword arguments always passed to ``make``.
    """

    id: str
    make: Callable[..., ml.AuxiliaryLossModule]
    inputs: Callable[[], tuple[Any, ...]]
    call: Callable[[nn.Module, tuple[Any, ...]], Any] = field(
        default=lambda layer, inputs: layer(*inputs)
    )
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> ml.AuxiliaryLossModule:
        return self.make(**{**self.kwargs, **overrides})

    def run(self, layer: nn.Module, inputs: tuple[Any, ...] | None = None) -> Any:
        return self.call(layer, self.inputs() if inputs is None else inputs)


def first_tensor(output: Any) -> torch.Tensor:
    """The first floating tensor inside a layer's output (tensor, tuple or dict)."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value
    raise AssertionError(f"no floating tensor in output of type {type(output).__name__}")
