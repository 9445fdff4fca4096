"""EntropyRegularizer: entropy minimization with a diversity guard, on digits with 30 labels.

Only 30 of the training digits keep their labels. Cross-entropy on them alone gives a weak
classifier. Entropy minimization on every training image (Grandvalet & Bengio 2004) asks for
confident predictions on the unlabeled ones too, which moves decision boundaries into low-density
regions; on its own it also rewards predicting fewer classes. Maximizing the entropy of the
batch-averaged prediction (``over="batch"``) forbids that. The two directions are two layers
with an explicit ``mode``; both emit non-negative terms (``entropy`` and the gap
``log K - H`` named ``entropy_gap``). The script prints, on the test set, the mean predicted
entropy, the number of classes the model predicts, and the accuracy.

    PYTHONPATH=src python examples/layers/entropy.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _digits import digits  # the shared split, beside this script
from torch import Tensor, nn

import multiloss as ml
from multiloss.layers import EntropyRegularizer

LABELS = 30


def make_model(minimize: float, diversity: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)]
    if minimize:  # confident predictions: H of each prediction
        layers.append(EntropyRegularizer(mode="minimize", aux_loss_weight=minimize))
    if diversity:  # every class used: log K - H of the batch-averaged prediction
        layers.append(EntropyRegularizer(mode="maximize", over="batch", aux_loss_weight=diversity))
    return nn.Sequential(*layers)


def run(
    minimize: float, diversity: float, data: tuple[Tensor, ...], steps: int, seed: int
) -> dict[str, float]:
    x_train, x_test, y_train, y_test = data
    generator = torch.Generator().manual_seed(seed)
    labeled = torch.randperm(len(x_train), generator=generator)[:LABELS]
    torch.manual_seed(seed)
    model = make_model(minimize, diversity)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        unlabeled = torch.randint(0, len(x_train), (128,), generator=generator)
        x = torch.cat([x_train[labeled], x_train[unlabeled]])  # labels are not looked at
        with ml.collect(model) as book:
            logits = model(x)
            book.add("task", F.cross_entropy(logits[:LABELS], y_train[labeled]))
        optimizer.zero_grad()
        book.total().backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(x_test)
    entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    prediction = logits.argmax(1)
    return {
        "entropy": float(entropy.mean()),
        "classes": float(len(prediction.unique())),
        "accuracy": float((prediction == y_test).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    runs = {
        "labels only": (0.0, 0.0),
        "+ minimize H (0.3)": (0.3, 0.0),
        "+ minimize H, maximize batch H": (0.3, 1.0),
    }
    start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for seed in range(args.seeds):
        data = digits(seed)
        for name, (minimize, diversity) in runs.items():
            results[name].append(run(minimize, diversity, data, args.steps, seed))

    print(
        f"MLP on digits with {LABELS} labels, {args.steps} steps; test set, median of "
        f"{args.seeds} seeds"
    )
    print(f"{'':<34}{'entropy':>9}{'classes':>9}{'accuracy':>10}")
    for name, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{name:<34}{med['entropy']:>9.3f}{med['classes']:>9.0f}{med['accuracy']:>10.4f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
