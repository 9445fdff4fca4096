"""MixtureOfExperts load balancing on the digits: how even is the expert load after training?

The demo model (an embedding, a residual MoE block with 8 experts and top-2 routing, a linear
head) is trained with each balancing option from the same initialization, for several seeds.
After training, one pass over the test set in eval mode measures the expert load: the
coefficient of variation of the per-expert share of assignments (cv, 0 = perfect balance),
the largest relative overload (max_vio) and the fraction of experts that receive no token.

    PYTHONPATH=src python examples/moe_balance.py [--steps 600] [--seeds 0 1 2]

``global`` is run with 4 micro-batches of 16 per optimizer step (``Trainer(accumulate=4)``), so
its counts span the step's 64 samples while each micro-batch's own counts span 16.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import multiloss as ml
from multiloss.demo.data import load_digits_data
from multiloss.demo.moe import DigitsMoE

RUNS: dict[str, tuple[dict[str, float], int]] = {  # label: (balance, micro-batches per step)
    "none": ({}, 1),
    "switch 0.01": ({"switch": 0.01}, 1),
    "switch 0.01 + z 1e-3": ({"switch": 0.01, "z": 1e-3}, 1),
    "global 0.01 (4 micro-batches)": ({"global": 0.01}, 4),
    "bias 1e-3 (aux-loss-free)": ({"bias": 1e-3}, 1),
}


def train(balance: dict[str, float], accumulate: int, steps: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    data = load_digits_data(seed=seed, batch_size=64 // accumulate)
    model = DigitsMoE(balance)
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        accumulate=accumulate,
        sinks=[],
        log_every=steps,
    )
    trainer.fit(data.train, steps=steps)
    model.eval()
    with torch.no_grad():
        logits = model(data.test_x)
    result = model.moe.aux_loss_diagnostics()
    result["accuracy"] = float((logits.argmax(dim=1) == data.test_y).float().mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)  # a 64-wide model: threads only add overhead
    started = time.perf_counter()
    print(f"{'balancing':<32} {'cv':>18} {'max_vio':>8} {'dead':>6} {'accuracy':>9}")
    for label, (balance, accumulate) in RUNS.items():
        results = [train(balance, accumulate, args.steps, seed) for seed in args.seeds]
        cvs = ", ".join(f"{r['cv']:.2f}" for r in results)
        print(
            f"{label:<32} {cvs:>18} {statistics.median(r['max_vio'] for r in results):>8.2f} "
            f"{statistics.median(r['dead_fraction'] for r in results):>6.2f} "
            f"{statistics.median(r['accuracy'] for r in results):>9.1%}"
        )
    print(f"cv per seed {args.seeds}; max_vio, dead fraction and accuracy: medians over seeds")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
