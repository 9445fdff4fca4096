"""Attach: a loss module (or function) on an output, with its target from the batch.

A digits classifier with a denoising head returns ``logits`` and ``recon`` (the clean image
it reconstructs from a noisy one) plus its hidden ``features``. The spec attaches:

* ``CrossEntropy`` with label smoothing to ``logits``, its target read from ``batch["digit"]``;
* a loss module returning two terms, ``{"l1": ..., "l2": ...}``, to ``recon``: each is reported
  separately (``recon/l1``, ``recon/l2``) and their sum is minimized;
* a target-free function of one argument to ``features``: an L1 activity penalty.

    PYTHONPATH=src python examples/spec_attach.py
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import multiloss as ml
from multiloss.losses import CrossEntropy
from multiloss.spec import Attach, Scaled, explain


class DenoisingClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.classify = nn.Linear(64, 10)
        self.decode = nn.Linear(64, 64)

    def forward(self, noisy: Tensor) -> dict[str, Tensor]:
        features = self.encoder(noisy)
        return {
            "logits": self.classify(features),
            "recon": self.decode(features),
            "features": features,
        }


class PixelLosses(nn.Module):
    """Two reconstruction errors, reported apart: a loss module with several outputs."""

    def forward(self, input: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"l1": F.l1_loss(input, target), "l2": F.mse_loss(input, target)}


def activity(features: Tensor) -> Tensor:
    return features.abs().mean()


def main(steps: int = 300, quiet: bool = False) -> dict[str, float]:
    torch.manual_seed(0)
    images, labels = load_digits(return_X_y=True)
    clean = torch.tensor(images / 16.0, dtype=torch.float32)
    digit = torch.tensor(labels)
    noisy = (clean + 0.3 * torch.randn_like(clean)).clamp(0, 1)

    def batches(rows: slice) -> DataLoader:
        data = TensorDataset(noisy[rows], clean[rows], digit[rows])
        return DataLoader(data, batch_size=64, shuffle=True)

    def as_dict(batch: list[Tensor]) -> dict[str, Tensor]:
        return {"noisy": batch[0], "recon": batch[1], "digit": batch[2]}

    spec = [
        Attach("logits", CrossEntropy(label_smoothing=0.05), target="digit"),
        Attach("recon", PixelLosses()),  # target: batch["recon"], the clean image
        Scaled(Attach("features", activity, name="activity"), 1e-3),
    ]
    model = DenoisingClassifier()  # forward(noisy): fed from batch["noisy"] by name
    explain(model, spec, as_dict(next(iter(batches(slice(0, 64))))))
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        losses=spec,
        forward=lambda net, batch: net(as_dict(batch)),
        sinks=[] if quiet else None,
    )
    history = trainer.fit(batches(slice(0, 1500)), steps=steps)
    with torch.no_grad():
        out = model(noisy[1500:])
    results = {
        "accuracy": float((out["logits"].argmax(1) == digit[1500:]).float().mean()),
        "denoised l1": float((out["recon"] - clean[1500:]).abs().mean()),
        "noisy l1": float((noisy[1500:] - clean[1500:]).abs().mean()),
        "recon/l2 (last log)": history["loss/recon/l2"][-1],
    }
    for key, value in results.items():
        print(f"{key}: {value:.3f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
