"""ContrastiveHead: a side loss that makes a classifier's features shift-invariant.

A classifier learns the digits from clean images. Alongside, a ContrastiveHead (projection
MLP + NT-Xent, temperature 0.2) sees two randomly shifted, noisy views of each batch and pulls
their representations together. Its side goal is measured on the encoder's features with the
definitions of Wang & Isola (2020), computed on two shifted views of the test set: alignment
(mean squared distance between normalized features of the two views: lower is more invariant)
and uniformity. The main task is measured by test accuracy on clean digits and on digits
shifted by one pixel, which the classifier never saw.

    PYTHONPATH=src python examples/layers/contrastive.py
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
from multiloss.layers import ContrastiveHead


def shifted(x: Tensor, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """Each 8x8 image moved by -1, 0 or +1 pixel on each axis (zero fill), plus noise."""
    n = len(x)
    padded = F.pad(x.view(n, 8, 8), (1, 1, 1, 1))
    dy, dx = (torch.randint(0, 3, (n,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(8))[:, :, None].expand(n, 8, 8)
    cols = (dx[:, None] + torch.arange(8))[:, None, :].expand(n, 8, 8)
    moved = padded[torch.arange(n)[:, None, None], rows, cols]
    return (moved + noise * torch.randn(moved.shape, generator=generator)).reshape(n, 64)


class Classifier(nn.Module):
    def __init__(self, contrastive_weight: float) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
        self.classify = nn.Linear(64, 10)
        self.contrast = ContrastiveHead(
            64, 32, temperature=0.2, aux_loss_weight=contrastive_weight,
            use_aux_loss=contrastive_weight > 0,
        )  # fmt: skip

    def forward(
        self, x: Tensor, view1: Tensor | None = None, view2: Tensor | None = None
    ) -> Tensor:
        if view1 is not None and self.contrast.use_aux_loss:
            self.contrast(self.encoder(view1), self.encoder(view2))  # emits contrast/nt_xent
        return self.classify(self.encoder(x))


def run(weight: float, data: tuple[Tensor, ...], steps: int, seed: int) -> dict[str, float]:
    x_train, x_test, y_train, y_test = data
    torch.manual_seed(seed)
    model = Classifier(weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(x_train), (128,), generator=generator)
        x, y = x_train[index], y_train[index]
        with ml.collect(model) as book:
            logits = model(x, shifted(x, generator), shifted(x, generator))
            book.add("task", F.cross_entropy(logits, y))
        optimizer.zero_grad()
        book.total().backward()
        optimizer.step()

    test = torch.Generator().manual_seed(1000 + seed)  # the same test views for every run
    view1, view2, moved = shifted(x_test, test), shifted(x_test, test), shifted(x_test, test)
    with torch.no_grad():
        # The layer's own diagnostics measure the encoder's features when given no projector.
        probe = ContrastiveHead(projector=nn.Identity())
        probe(model.encoder(view1), model.encoder(view2))
        stats = probe.aux_loss_diagnostics()
        clean = (model(x_test).argmax(1) == y_test).float().mean()
        shift = (model(moved).argmax(1) == y_test).float().mean()
    return {
        "alignment": stats["alignment"],
        "uniformity": stats["uniformity"],
        "clean": float(clean),
        "shifted": float(shift),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    weights = (0.0, 1.0, 3.0)
    start = time.perf_counter()
    results: dict[float, list[dict[str, float]]] = {weight: [] for weight in weights}
    for seed in range(args.seeds):
        data = digits(seed)
        for weight in weights:
            results[weight].append(run(weight, data, args.steps, seed))

    print(f"MLP on digits, {args.steps} steps; test set, median of {args.seeds} seeds")
    header = f"{'NT-Xent weight':<16}{'alignment':>11}{'uniformity':>12}"
    print(header + f"{'clean acc':>11}{'shifted acc':>13}")
    for weight, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(
            f"{weight:<16g}{med['alignment']:>11.3f}{med['uniformity']:>12.3f}"
            f"{med['clean']:>11.4f}{med['shifted']:>13.4f}"
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
