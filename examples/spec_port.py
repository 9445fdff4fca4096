"""Port: outputs that already are losses.

A small variational autoencoder on the digits computes its own loss terms and returns them as
outputs next to its predictions: ``recon`` (a scalar) and ``kl_per_dim`` (the KL divergence of
each latent dimension, a vector). ``Port`` trains them as they are; an array-valued port is
summed, so ``kl_per_dim`` contributes the total KL. The other outputs (``mean``, ``images``)
are not named, so they are not trained.

    PYTHONPATH=src python examples/spec_port.py
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.spec import Port


class VAE(nn.Module):
    def __init__(self, latent: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 64))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp() if self.training else mean
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1).mean()
        kl_per_dim = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).mean(0)  # (latent,)
        return {"recon": recon, "kl_per_dim": kl_per_dim, "mean": mean, "images": logits.sigmoid()}


def main(steps: int = 400, quiet: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    digits = load_digits_data()
    model = VAE()
    spec = [Port("recon"), Port("kl_per_dim", name="kl")]
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        losses=spec,  # batches are (images, labels) pairs; the labels are simply not used
        sinks=[] if quiet else None,
    )
    history = trainer.fit(digits.train, steps=steps)
    model.eval()
    with torch.no_grad():
        out = model(digits.test_x)
    results = {
        "recon (first log)": history["loss/recon"][0],
        "recon (last log)": history["loss/recon"][-1],
        "kl (last log)": history["loss/kl"][-1],
        "test recon": float(out["recon"]),
        "active latent dims": float((out["kl_per_dim"] > 0.01).sum()),
    }
    for key, value in results.items():
        print(f"{key}: {value:.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    main(parser.parse_args().steps)
