"""ActivationRegularizer: sparse hidden activations at (almost) no cost in accuracy.

An MLP classifies the digits (scikit-learn's bundled 8x8 images) three times from the same
initialization: without a penalty, with an L1 penalty on its hidden ReLU activations, and with
the sparse-autoencoder KL penalty towards a mean activity of rho = 0.05. It prints, on the test
set, the fraction of hidden activations that are (near) zero, the mean activation, the units
that never fire, and the test accuracy.

    PYTHONPATH=src python examples/layers/activation.py
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from _digits import digits  # the shared split, beside this script
from torch import nn

import multiloss as ml
from multiloss.layers import ActivationRegularizer


def make_model(penalty: dict[str, Any] | None, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)  # same initial weights in every run
    # The one-line change: wrap the activation whose output should be sparse.
    hidden = nn.ReLU() if penalty is None else ActivationRegularizer(nn.ReLU(), **penalty)
    return nn.Sequential(nn.Linear(64, 256), hidden, nn.Linear(256, 10))


def train(model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, seed: int) -> None:
    x_train, _, y_train, _ = data
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(x_train), generator=generator).split(64):
            x, y = x_train[index], y_train[index]
            with ml.collect(model, batch=(x, y)) as book:
                book.add("task", F.cross_entropy(model(x), y))
            optimizer.zero_grad()
            book.total().backward()
            optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Sequential, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
    _, x_test, _, y_test = data
    model.eval()
    hidden = torch.relu(model[0](x_test))
    return {
        "near_zero": float((hidden <= 1e-3).float().mean()),
        "mean": float(hidden.mean()),
        "dead": float((hidden <= 1e-3).all(0).float().mean()),
        "accuracy": float((model(x_test).argmax(1) == y_test).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    runs: dict[str, dict[str, Any] | None] = {
        "none": None,
        "l1, weight 3": {"penalty": "l1", "aux_loss_weight": 3.0},
        "kl rho=0.05, weight 3": {"penalty": "kl", "rho": 0.05, "aux_loss_weight": 3.0},
    }
    start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for seed in range(args.seeds):
        data = digits(seed)
        for name, penalty in runs.items():
            model = make_model(penalty, seed)
            train(model, data, args.epochs, seed)
            results[name].append(evaluate(model, data))

    print(f"MLP 64-256-10 on digits, {args.epochs} epochs, mean of {args.seeds} seeds (test set)")
    print(f"{'penalty':<24}{'near zero':>11}{'mean act':>10}{'dead units':>12}{'accuracy':>10}")
    for name, rows in results.items():
        mean = {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}
        print(
            f"{name:<24}{mean['near_zero']:>11.3f}{mean['mean']:>10.3f}{mean['dead']:>12.3f}"
            f"{mean['accuracy']:>10.4f}"
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
