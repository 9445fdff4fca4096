"""Scaled: weights that are constants or schedules of the step.

The VAE of ``spec_port.py`` trained with its KL term annealed in: ``Scaled(Port("kl"),
KLAnneal(...))`` ramps the KL weight from 0 to ``beta`` (the cyclical schedule of Fu et al.
2019), and a float scale turns the reconstruction sum into a per-pixel mean. The weights the
trainer used at each log are read back from the history.

    PYTHONPATH=src python examples/spec_scaled.py
"""

from __future__ import annotations

import argparse

import torch

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.schedules import KLAnneal
from multiloss.spec import Port, Scaled
from spec_port import VAE


def main(steps: int = 400, quiet: bool = False, beta: float = 0.5) -> dict[str, float]:
    torch.manual_seed(0)
    digits = load_digits_data()
    model = VAE()
    spec = [
        Scaled(Port("recon"), 1 / 64),  # the sum over 64 pixels -> a per-pixel mean
        Scaled(Port("kl_per_dim", name="kl"), beta / 64 * KLAnneal(steps, cycles=2, ratio=0.5)),
    ]
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        losses=spec,
        log_every=max(steps // 10, 1),
        sinks=[] if quiet else None,
    )
    history = trainer.fit(digits.train, steps=steps)
    print("step  weight/kl  loss/kl")
    for step, weight, kl in zip(
        history.steps("weight/kl"), history["weight/kl"], history["loss/kl"], strict=True
    ):
        print(f"{step:4d}  {weight:9.5f}  {kl:7.3f}")
    results = {"kl weight (last)": history["weight/kl"][-1], "kl (last)": history["loss/kl"][-1]}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--beta", type=float, default=0.5)
    arguments = parser.parse_args()
    main(arguments.steps, beta=arguments.beta)
