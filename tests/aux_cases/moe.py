"""MixtureOfExperts configurations for the shared auxiliary-loss-layer property tests.

Not registered, because they emit no loss term and the family requires at least one: the
aux-loss-free ``{"bias": rate}`` alone and ``gradient_carrier=True`` (both are covered in
``tests/layers/moe``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from multiloss.layers import MixtureOfExperts
from tests.aux_properties import AuxCase


def _make(**defaults: Any) -> Callable[..., MixtureOfExperts]:
    def make(**kwargs: Any) -> MixtureOfExperts:
        return MixtureOfExperts(8, 16, 4, **{**defaults, **kwargs})

    return make


def _tokens() -> tuple[torch.Tensor, ...]:
    return (torch.randn(2, 5, 8),)


def _padded() -> tuple[torch.Tensor, ...]:
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return torch.randn(2, 5, 8), mask


def _one_step_per_call(layer: nn.Module, inputs: tuple[Any, ...]) -> Any:
    # `global` counts accumulate over the micro-batches of an optimizer step; the family
    # compares separate calls, so each call here is its own step.
    assert isinstance(layer, MixtureOfExperts)
    layer.reset_accumulation()
    return layer(*inputs)


CASES = [
    AuxCase("moe-switch", _make(), _tokens),
    AuxCase(
        "moe-all-losses-padded",
        _make(balance={"switch": 0.01, "sequence": 0.01, "z": 1e-3, "bias": 1e-3}),
        _padded,
    ),
    AuxCase(
        "moe-global",
        _make(balance={"global": 0.01, "z": 1e-3}),
        _padded,
        call=_one_step_per_call,
    ),
    AuxCase(
        "moe-capacity-sigmoid-top1",
        _make(top_k=1, score="sigmoid", capacity_factor=1.0, drop_policy="position"),
        _tokens,
    ),
    AuxCase("moe-blocked-geglu", _make(backend="blocked", activation="geglu"), _padded),
]
