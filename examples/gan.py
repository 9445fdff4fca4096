"""Min-max training: a GAN on a ring of eight Gaussians, with alternating optimizer groups.

The model returns every loss of the game in one forward pass; two ``OptimizerGroup`` s
decide who steps: the discriminator ``disc_steps`` times (its losses ``disc/*``; the runs
below use 1 and 2), then the generator once (``gen/*``). Every loss is logged every step,
whichever group stepped.

The data is the classic mode-collapse test of the Unrolled-GAN paper (Metz et al., 2017):
eight Gaussians of standard deviation 0.05 on a circle of radius 2, generated on the fly (no
download). A generated sample is *high quality* if it lies within three standard deviations of
a mode; a mode is *covered* if at least 1% of the samples are high-quality samples of that mode.

    PYTHONPATH=src python examples/gan.py --plot examples/gan.png   # three runs of 4000 steps

Three runs of the same game, same seed: groups stepping 1:1 and 2:1 (discriminator:generator),
and *one* optimizer with a gradient-reversal layer between generator and discriminator: the
discriminator minimizes its fake-sample loss and the generator receives the reversed gradient,
i.e. maximizes it (the saturating minimax game of the original GAN paper, with a reversal layer
in place of a second optimizer, as in domain-adversarial training).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import multiloss as ml
from multiloss.layers import GradientReversal

MODES = 8
RADIUS = 2.0
STD = 0.05
LATENT = 8


def ring_centers() -> Tensor:
    angles = torch.arange(MODES) * (2 * math.pi / MODES)
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


def ring_batches(batch: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of real samples (each batch a (batch, 2) tensor)."""
    centers = ring_centers()
    while True:
        which = torch.randint(MODES, (batch,), generator=generator)
        yield centers[which] + STD * torch.randn(batch, 2, generator=generator)


def mlp(inputs: int, outputs: int, width: int = 128) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, outputs),
    )


class Game(nn.Module):
    """Generator and discriminator; ``forward(real)`` returns every loss of the game.

    ``disc/real`` and ``disc/fake`` train the discriminator (binary cross-entropy on real and
    detached fake samples); ``gen/fool`` is the generator's non-saturating loss. With
    ``reversal=True`` the generator's samples reach the discriminator through a
    gradient-reversal layer instead, and the game has the two discriminator losses only.
    """

    def __init__(self, *, reversal: bool = False) -> None:
        super().__init__()
        self.generator = mlp(LATENT, 2)
        self.discriminator = mlp(2, 1)
        self.reverse = GradientReversal(1.0) if reversal else None

    def sample(self, count: int) -> Tensor:
        latent = torch.randn(count, LATENT, device=next(self.generator.parameters()).device)
        samples: Tensor = self.generator(latent)
        return samples

    def forward(self, real: Tensor) -> dict[str, Tensor]:
        fake = self.sample(real.shape[0])
        real_logits = self.discriminator(real)
        losses = {"disc/real": F.softplus(-real_logits).mean()}  # -log D(x)
        if self.reverse is not None:
            # D minimizes -log(1 - D(G(z))); G gets the reversed gradient: maximizes it.
            losses["disc/fake"] = F.softplus(self.discriminator(self.reverse(fake))).mean()
            return losses
        losses["disc/fake"] = F.softplus(self.discriminator(fake.detach())).mean()
        losses["gen/fool"] = F.softplus(-self.discriminator(fake)).mean()  # -log D(G(z))
        return losses


def quality(samples: Tensor) -> dict[str, float]:
    """High-quality fraction and modes covered (see the module docstring)."""
    distance = torch.cdist(samples, ring_centers())
    nearest, mode = distance.min(dim=1)
    good = nearest < 3 * STD
    counts = torch.bincount(mode[good], minlength=MODES)
    return {
        "high_quality": good.float().mean().item(),
        "modes_covered": float((counts >= 0.01 * len(samples)).sum().item()),
    }


def adam(parameters: Iterator[nn.Parameter]) -> torch.optim.Adam:
    return torch.optim.Adam(parameters, lr=1e-3, betas=(0.5, 0.999))  # the usual GAN betas


def train(
    *, steps: int, disc_steps: int = 1, reversal: bool = False, quiet: bool = False
) -> tuple[Game, dict[str, float]]:
    torch.manual_seed(0)
    game = Game(reversal=reversal)
    if reversal:
        optimizers: torch.optim.Optimizer | list[ml.OptimizerGroup] = adam(game.parameters())
    else:
        optimizers = [
            ml.OptimizerGroup(
                adam(game.discriminator.parameters()),
                "disc/*",
                steps=disc_steps,
                name="disc",
            ),
            ml.OptimizerGroup(adam(game.generator.parameters()), "gen/*", name="gen"),
        ]
    trainer = ml.Trainer(game, optimizers, sinks=[] if quiet else None, log_every=100)
    before = quality(game.sample(2000).detach())
    history = trainer.fit(ring_batches(256, torch.Generator().manual_seed(1)), steps=steps)
    with torch.no_grad():
        after = quality(game.sample(2000))
    results = {f"start/{k}": v for k, v in before.items()}
    results |= {f"end/{k}": v for k, v in after.items()}
    for name in ("disc/real", "disc/fake", "gen/fool"):
        if f"loss/{name}" in history.last():
            results[f"loss/{name}"] = float(history.last()[f"loss/{name}"])
    return game, results


def plot(games: dict[str, Game], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = next(ring_batches(2000, torch.Generator().manual_seed(2)))
    fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 4.2), squeeze=False)
    for ax, (title, game) in zip(axes[0], games.items(), strict=True):
        with torch.no_grad():
            fake = game.sample(2000)
        ax.scatter(real[:, 0], real[:, 1], s=2, alpha=0.3, label="data")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, alpha=0.3, label="generated")
        ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal", title=title)
        ax.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(steps: int = 4000, quiet: bool = False, plot_to: str | None = None) -> dict[str, float]:
    torch.set_num_threads(1)
    results: dict[str, float] = {}
    games: dict[str, Game] = {}
    runs: tuple[tuple[str, dict[str, Any]], ...] = (
        ("groups, 1:1", {"disc_steps": 1}),
        ("groups, 2:1", {"disc_steps": 2}),
        ("gradient reversal", {"reversal": True}),
    )
    for label, kwargs in runs:
        game, outcome = train(steps=steps, quiet=True, **kwargs)
        games[label] = game
        results |= {f"{label}/{key}": value for key, value in outcome.items()}
        if not quiet:
            print(
                f"{label:18s}  modes covered {outcome['start/modes_covered']:.0f} -> "
                f"{outcome['end/modes_covered']:.0f} of {MODES}, high-quality samples "
                f"{outcome['start/high_quality']:.1%} -> {outcome['end/high_quality']:.1%}"
            )
    if plot_to:
        plot(games, plot_to)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--plot", default=None, help="write the samples of each run here")
    args = parser.parse_args()
    main(steps=args.steps, plot_to=args.plot)
