"""Tiny models shared by the spec tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import multiloss as ml


class MultiHead(nn.Module):
    """A trunk and one head per output kind; returns a dict of ports."""

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Linear(features, 8)
        self.softmax_head = nn.Sequential(nn.Linear(8, classes), nn.Softmax(dim=-1))
        self.log_softmax_head = nn.Sequential(nn.Linear(8, classes), nn.LogSoftmax(dim=1))
        self.sigmoid_head = nn.Sequential(nn.Linear(8, 2), nn.Sigmoid())
        self.logits_head = nn.Linear(8, classes)
        self.binary_head = nn.Linear(8, 1)
        self.regression_head = nn.Linear(8, 2)
        self.distance = nn.PairwiseDistance()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = torch.tanh(self.trunk(x))
        return {
            "probs": self.softmax_head(h),
            "log_probs": self.log_softmax_head(h),
            "yes_no": self.sigmoid_head(h),
            "logits": self.logits_head(h),
            "binary": self.binary_head(h),
            "value": self.regression_head(h),
            "distance": self.distance(h[:, :4], h[:, 4:]),
        }


def multi_head_batch(n: int = 6, classes: int = 3) -> dict[str, Tensor]:
    return {
        "input": torch.randn(n, 4),
        "probs": torch.randint(0, classes, (n,)),
        "log_probs": torch.randint(0, classes, (n,)),
        "yes_no": torch.rand(n, 2),
        "logits": torch.randint(0, classes, (n,)),
        "binary": torch.randint(0, 2, (n,)),
        "value": torch.randn(n, 2),
        "distance": torch.randint(0, 2, (n,)),
    }


class Functional(nn.Module):
    """Outputs made by functional ops in the model's own forward, not by submodules."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.fc(x)
        return {
            "probs": F.softmax(z, dim=1),
            "log_probs": z.log_softmax(-1),
            "sig": torch.sigmoid(z),
            "scaled": z * 2.0,
            "mse": F.mse_loss(z, torch.zeros_like(z)),
        }


class WithLosses(nn.Module):
    """Returns a prediction and ready-made losses; emits one more with add_loss."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.criterion = nn.MSELoss()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        y = self.fc(x)
        ml.add_loss("l2", y.pow(2).mean())
        return {
            "pred": y,
            "criterion": self.criterion(y, torch.ones_like(y)),
            "per_example": y.pow(2).sum(1),
            "scalar": y.abs().mean(),
        }
