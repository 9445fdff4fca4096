"""GaussianKL: KL annealing and free bits keep a VAE with a strong decoder from collapsing.

A VAE on binarized digits whose decoder is autoregressive (a MADE: pixel i sees the latent
and pixels < i) can explain much of the data without its latent; trained plainly, the KL term
wins early, the posterior collapses to the prior and the decoder learns to ignore it. The same
model is trained three ways: plain, with the KL weight annealed from 0 to 1 over the first half
of the run (``KLAnneal``), and with free bits (0.25 nats per dimension). On the test set the
script prints the rate (the KL, in nats: how much the latent tells the decoder), the units
carrying at least 0.1 nats, the active units of Burda et al. (variance of the posterior mean
above 0.01), the reconstruction term and the negative ELBO (lower is better).

    PYTHONPATH=src python examples/layers/gaussian_kl.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import multiloss as ml
from multiloss.layers import GaussianKL
from multiloss.schedules import KLAnneal

LATENT, HIDDEN, PIXELS, BATCH = 32, 256, 64, 128


class MADEDecoder(nn.Module):
    """p(x | z) = prod_i p(x_i | x_<i, z): masked weights keep pixel i from seeing pixels >= i."""

    def __init__(self) -> None:
        super().__init__()
        order = torch.arange(1, PIXELS + 1)
        degree = torch.arange(HIDDEN) % (PIXELS - 1) + 1  # hidden unit k sees pixels <= degree
        self.register_buffer("mask_in", (degree[:, None] >= order[None, :]).float())
        self.register_buffer("mask_out", (order[:, None] > degree[None, :]).float())
        self.pixels_in = nn.Linear(PIXELS, HIDDEN)
        self.latent_in = nn.Linear(LATENT, HIDDEN)
        self.out = nn.Linear(HIDDEN, PIXELS)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        masked_in = self.pixels_in.weight * self.mask_in
        h = torch.relu(F.linear(x, masked_in, self.pixels_in.bias) + self.latent_in(z))
        return F.linear(h, self.out.weight * self.mask_out, self.out.bias)  # logits


class VAE(nn.Module):
    def __init__(self, **kl: Any) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(PIXELS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT)
        )
        self.kl = GaussianKL(**kl)  # emits the loss "kl/kl"; returns a sample (the mean in eval)
        self.decoder = MADEDecoder()

    def forward(self, x: Tensor) -> Tensor:
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return self.decoder(x, self.kl(mean, logvar))


def reconstruction(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | z) per example, in nats."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)


def run(
    kl: dict[str, Any], data: tuple[Tensor, Tensor], epochs: int, seed: int
) -> dict[str, float]:
    x_train, x_test = data
    torch.manual_seed(seed)
    model = VAE(**kl)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        for index in torch.randperm(len(x_train), generator=generator).split(BATCH):
            x = x_train[index]
            with ml.collect(model, step=step) as book:  # the step drives the KL schedule
                book.add("reconstruction", reconstruction(model(x), x))
            optimizer.zero_grad()
            book.total().backward()
            optimizer.step()
            step += 1
    model.eval()
    with torch.no_grad():
        rec = float(reconstruction(model(x_test), x_test))  # z = posterior mean in eval mode
    stats = model.kl.aux_loss_diagnostics()  # from that test-set pass
    per_dim = [stats[f"kl/{j}"] for j in range(LATENT)] if f"kl/{LATENT - 1}" in stats else []
    return {
        "rate": stats["kl"],
        "informative": float(sum(value >= 0.1 for value in per_dim)),
        "active": stats["active_units"],
        "reconstruction": rec,
        "neg_elbo": rec + stats["kl"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread

    digits = (load_digits().data > 7).astype("float32")  # binarized 8x8 images
    steps = args.epochs * -(-int(len(digits) * 0.75) // BATCH)
    runs: dict[str, dict[str, Any]] = {
        "plain": {},
        "KL annealing": {"aux_loss_schedule": KLAnneal(steps // 2, ratio=1.0)},
        "free bits 0.25": {"free_bits": 0.25},
    }
    start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for seed in range(args.seeds):
        x_train, x_test = train_test_split(digits, test_size=0.25, random_state=seed)
        data = (torch.from_numpy(x_train), torch.from_numpy(x_test))
        for name, kl in runs.items():
            results[name].append(run({"per_dim_limit": LATENT, **kl}, data, args.epochs, seed))

    print(
        f"VAE (latent {LATENT}, MADE decoder) on binarized digits, {args.epochs} epochs; "
        f"test set, per seed"
    )
    header = f"{'':<16}{'rate (nats)':>14}{'units>=0.1nat':>15}{'AU (Burda)':>12}"
    print(header + f"{'recon':>14}{'-ELBO':>14}")
    for name, rows in results.items():

        def cell(key: str, fmt: str, rows: list[dict[str, float]] = rows) -> str:
            return "/".join(format(row[key], fmt) for row in rows)

        print(
            f"{name:<16}{cell('rate', '.2f'):>14}{cell('informative', '.0f'):>15}"
            f"{cell('active', '.0f'):>12}{cell('reconstruction', '.2f'):>14}"
            f"{cell('neg_elbo', '.2f'):>14}"
        )
    best = min(results, key=lambda n: statistics.mean(r["neg_elbo"] for r in results[n]))
    print(f"best mean -ELBO: {best}   ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
