"""Automatic: a loss for every output, chosen from the layer that produces it.

A digits model with three heads returns predictions only: class logits from a final
``nn.Linear``, an "is it even?" probability from ``nn.Sigmoid`` and the amount of ink from a
linear regression head. ``multiloss.explain`` shows what ``Automatic`` attaches to each port
(cross-entropy, binary cross-entropy, mean squared error) and why; the trainer then trains
``attach(model, Automatic)``, and the plain model comes back for inference.

    PYTHONPATH=src python examples/spec_automatic.py
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

import multiloss as ml
from multiloss.spec import Automatic, explain


class DigitsDicts(Dataset[dict[str, Tensor]]):
    """Digit images with three targets, one per output port of the model."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "input": self.images[i],
            "digit": self.labels[i],  # integer class index
            "is_even": (self.labels[i] % 2 == 0).float(),  # a yes/no label
            "ink": self.images[i].mean().unsqueeze(0),  # a real number
        }


class ThreeHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.digit = nn.Linear(64, 10)
        self.is_even = nn.Sequential(nn.Linear(64, 1), nn.Sigmoid())
        self.ink = nn.Linear(64, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {"digit": self.digit(h), "is_even": self.is_even(h).squeeze(1), "ink": self.ink(h)}


def main(steps: int = 300, quiet: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32)
    y = torch.tensor(labels)
    train, test = DigitsDicts(x[:1500], y[:1500]), DigitsDicts(x[1500:], y[1500:])
    loader = DataLoader(train, batch_size=64, shuffle=True)

    model = ThreeHeads()
    explain(model, Automatic, next(iter(loader)))  # which loss went to which port, and why

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    trainer = ml.Trainer(model, optimizer, losses=Automatic, sinks=[] if quiet else None)
    trainer.fit(loader, steps=steps)

    with torch.no_grad():  # the plain model: no loss modules, no spec
        out = model(test.images)
    results = {
        "digit accuracy": float((out["digit"].argmax(1) == test.labels).float().mean()),
        "even accuracy": float(((out["is_even"] > 0.5) == (test.labels % 2 == 0)).float().mean()),
        "ink error": float((out["ink"].squeeze(1) - test.images.mean(1)).abs().mean()),
    }
    for key, value in results.items():
        print(f"{key}: {value:.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
