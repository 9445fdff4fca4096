"""The demo model: a digits classifier whose submodules emit their own auxiliary losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import multiloss as ml

__all__ = ["DigitsNet"]


class SparseEncoder(nn.Module):
    """Two ReLU layers; emits an L1 activity penalty on its code (``encoder/sparsity``)."""

    def __init__(self, inputs: int = 64, hidden: int = 128, code: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code: torch.Tensor = self.layers(x)  # (batch, code)
        ml.add_loss("sparsity", code.abs().mean(), weight=0.05)
        ml.record("active_fraction", (code > 0).float().mean())
        return code


class Reconstruction(nn.Module):
    """A decoder head that rebuilds the input from the code (``decoder/recon``)."""

    def __init__(self, code: int = 64, outputs: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(code, 128), nn.ReLU(), nn.Linear(128, outputs))

    def forward(self, code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rebuilt = torch.sigmoid(self.layers(code))
        ml.add_loss("recon", F.mse_loss(rebuilt, x), weight=1.0)
        return rebuilt


class DigitsNet(nn.Module):
    """Classifier + reconstruction head + sparsity penalty.

    ``forward(x, y)`` returns ``{"cls": cross-entropy}`` and, through ``multiloss.add_loss``
    inside its submodules, ``encoder/sparsity`` and ``decoder/recon``. ``forward(x)`` returns
    logits: the decoder does not run, and ``add_loss`` outside a collector does nothing.

    Example:
        >>> net = DigitsNet()
        >>> net(torch.rand(2, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.encoder = SparseEncoder()
        self.decoder = Reconstruction()
        self.classifier = nn.Linear(64, classes)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        code = self.encoder(x)
        logits: torch.Tensor = self.classifier(code)
        if y is None:
            return logits
        self.decoder(code, x)
        return {"cls": F.cross_entropy(logits, y)}
