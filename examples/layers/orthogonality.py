"""OrthogonalityRegularizer: well-conditioned weights let a deep plain network train.

The 10-layer tanh MLP of the deep-supervision example (no normalization, no skip connections)
trained with Adam drifts into badly conditioned weight matrices: signals and gradients shrink
along most directions, and it learns the digits slowly. Wrapping each hidden Linear in an
``OrthogonalityRegularizer`` (soft orthogonality ``||W W^T - I||_F^2``) keeps the matrices near
orthogonal. The script prints the median condition number and the median ``||W W^T - I||_F``
of the hidden weights after training, and the test accuracy, for a few weights of the penalty.

    PYTHONPATH=src python examples/layers/orthogonality.py
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
from multiloss.layers import OrthogonalityRegularizer, orthogonality_gap

DEPTH = 10


def deep_plain_net(weight: float, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(64, 64), nn.Tanh()]
    for _ in range(DEPTH - 1):
        hidden = nn.Linear(64, 64)
        # The one-line change: wrap each square hidden layer.
        layers += [OrthogonalityRegularizer(hidden, aux_loss_weight=weight) if weight else hidden]
        layers.append(nn.Tanh())
    return nn.Sequential(*layers, nn.Linear(64, 10))


def hidden_weights(model: nn.Sequential) -> list[Tensor]:
    found = []
    for module in list(model)[2:-1]:
        if isinstance(module, OrthogonalityRegularizer):
            module = module.module
        if isinstance(module, nn.Linear):
            found.append(module.weight.detach())
    return found


def run(weight: float, data: tuple[Tensor, ...], epochs: int, seed: int) -> dict[str, float]:
    x_train, x_test, y_train, y_test = data
    model = deep_plain_net(weight, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(x_train), generator=generator).split(32):
            x, y = x_train[index], y_train[index]
            with ml.collect(model) as book:
                book.add("task", F.cross_entropy(model(x), y))
            optimizer.zero_grad()
            book.total().backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    weights = hidden_weights(model)
    return {
        "condition": statistics.median(float(torch.linalg.cond(w)) for w in weights),
        "gap": statistics.median(float(orthogonality_gap(w).sqrt()) for w in weights),
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    penalties = (0.0, 0.01, 0.1)
    start = time.perf_counter()
    results: dict[float, list[dict[str, float]]] = {weight: [] for weight in penalties}
    for seed in range(args.seeds):
        data = digits(seed)
        for weight in penalties:
            results[weight].append(run(weight, data, args.epochs, seed))

    print(
        f"{DEPTH}-layer tanh MLP on digits, Adam, {args.epochs} epochs; median of {args.seeds} "
        "seeds"
    )
    print(f"{'penalty weight':<16}{'cond(W)':>10}{'||WW^T-I||':>12}{'test acc':>10}")
    for weight, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{weight:<16g}{med['condition']:>10.2f}{med['gap']:>12.3f}{med['accuracy']:>10.4f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
