"""Maximize: push a quantity up while the task loss goes down.

The confidence penalty of Pereyra et al. (2017): a classifier is trained to minimize
cross-entropy while *maximizing* the entropy of its own predictions, which keeps it from
becoming over-confident. ``Maximize(...)`` reports the entropy as itself (a positive number)
with a negative weight, so its curve reads naturally. The same model is trained without the
penalty for comparison.

    PYTHONPATH=src python examples/spec_maximize.py
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.losses import CrossEntropy
from multiloss.spec import Attach, Maximize, Scaled


def prediction_entropy(logits: Tensor) -> Tensor:
    """Mean entropy (nats) of the predicted class distribution."""
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def train(penalty: float, steps: int, quiet: bool) -> dict[str, float]:
    torch.manual_seed(0)
    digits = load_digits_data()
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    spec: list = [Attach("output", CrossEntropy())]  # target: the labels of (images, labels)
    if penalty:
        spec.append(Scaled(Maximize(Attach("output", prediction_entropy, name="entropy")), penalty))
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        losses=spec,
        sinks=[] if quiet else None,
    )
    history = trainer.fit(digits.train, steps=steps)
    if penalty:
        print(
            f"weight/entropy: {history['weight/entropy'][-1]}, "
            f"loss/entropy: {history['loss/entropy'][0]:.3f} -> {history['loss/entropy'][-1]:.3f}"
        )
    with torch.no_grad():
        logits = model(digits.test_x)
    return {
        "accuracy": float((logits.argmax(1) == digits.test_y).float().mean()),
        "test entropy": float(prediction_entropy(logits)),
        "cross-entropy (last log)": history["loss/output"][-1],
    }


def main(steps: int = 400, quiet: bool = False, penalty: float = 0.5) -> dict[str, float]:
    plain = train(0.0, steps, quiet)
    penalized = train(penalty, steps, quiet)
    print(f"{'':26s}{'plain':>10s}{'maximize entropy':>18s}")
    for key in plain:
        print(f"{key:26s}{plain[key]:10.3f}{penalized[key]:18.3f}")
    return {
        f"{key} ({name})": value
        for name, row in (("plain", plain), ("penalized", penalized))
        for key, value in row.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--penalty", type=float, default=0.5)
    arguments = parser.parse_args()
    main(arguments.steps, penalty=arguments.penalty)
