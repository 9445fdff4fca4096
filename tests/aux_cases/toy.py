"""A minimal auxiliary-loss layer that exercises the base class on its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import multiloss as ml
from tests.aux_properties import AuxCase


class ToyPenalty(ml.AuxiliaryLossModule):
    """A linear layer whose outputs are pushed towards zero (two terms, one coefficient)."""

    def __init__(self, dim: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        self.save_for_aux_loss(out)
        return out

    def aux_loss_terms(self, cache: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return {"l1": cache.float().abs().mean(), "l2": cache.float().pow(2).mean()}

    def aux_loss_coefficients(self) -> Mapping[str, float]:
        return {"l2": 0.5}

    def aux_diagnostics(self, cache: torch.Tensor) -> Mapping[str, float | torch.Tensor]:
        return {"mean_abs": cache.abs().mean(), "dim": cache.shape[-1]}


CASES = [AuxCase("toy", ToyPenalty, lambda: (torch.randn(3, 4),))]
