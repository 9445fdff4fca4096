"""Tiny models and data used across the trainer tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml


class TwoLoss(nn.Module):
    """Regression with a returned task loss and an emitted L2 activity penalty."""

    def __init__(self, dim: int = 4, penalty: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Linear(dim, 8)
        self.head = nn.Linear(8, 1)
        self.penalty = penalty

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.body(x))
        ml.add_loss("l2", hidden.pow(2).mean(), weight=self.penalty)
        ml.record("active", (hidden > 0).float().mean())
        return {"mse": F.mse_loss(self.head(hidden).squeeze(-1), y)}


class Dropper(nn.Module):
    """Uses dropout, so exact resumption needs the RNG state restored."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.net(x).squeeze(-1)
        ml.add_loss("aux", out.pow(2).mean(), weight=0.01)
        return F.mse_loss(out, y)


def regression_batches(count: int = 6, size: int = 8, dim: int = 4, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, dim, generator=generator), torch.randn(size, generator=generator))
        for _ in range(count)
    ]


def make_trainer(model: nn.Module | None = None, **kwargs: object) -> ml.Trainer:
    model = model if model is not None else TwoLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    kwargs.setdefault("sinks", [])
    return ml.Trainer(model, optimizer, **kwargs)  # type: ignore[arg-type]
