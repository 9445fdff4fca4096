"""Scale imbalance: regression tasks whose targets span three orders of magnitude.

Four regression tasks share one trunk; task ``k``'s target is ``10**k`` times a smooth random
function of the input (scales 1, 10, 100, 1000). Their mean-squared errors therefore differ by
up to a million, and plain summation trains the trunk for the largest task only: the small
tasks' losses hardly move relative to where they started. Methods that equalize *relative*
progress (Normalize, Uncertainty, GradNorm, FAMO; DWA and RLW for comparison) are trained from
the same initialization on the same data, and the script prints each task's held-out loss at
the end divided by its loss at the start.

Run::

    PYTHONPATH=src python examples/scale_imbalance.py            # about 20 s per method (8 methods)
    PYTHONPATH=src python examples/scale_imbalance.py --steps 300 --methods sum,famo
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from multiloss.balancing import (
    DWA,
    FAMO,
    RLW,
    Balancer,
    GradNorm,
    Normalize,
    Sum,
    Uncertainty,
)

SCALES = (1.0, 10.0, 100.0, 1000.0)
NAMES = tuple(f"scale_{int(s)}" for s in SCALES)

METHODS: dict[str, Callable[[], Balancer]] = {
    "sum": Sum,
    "normalize": Normalize,
    # The log-variance lr of Nash-MTL's benchmark code; init="first" starts each log-variance
    # at its equilibrium (see docs/balancing.md for why the paper's init=0 lags here).
    "uncertainty": lambda: Uncertainty(init="first", lr=0.025),
    "uncertainty(init=0)": lambda: Uncertainty(lr=0.025),
    "gradnorm": lambda: GradNorm(alpha=1.5, lr=0.025),
    "famo": FAMO,
    "dwa": lambda: DWA(window=50),
    "rlw": RLW,
}


def make_data(
    samples: int, dim: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """Inputs, targets (one column per task) and the teachers that produced them."""
    x = torch.randn(samples, dim, generator=generator)
    teachers = [
        (
            torch.randn(dim, 32, generator=generator) / math.sqrt(dim),
            torch.randn(32, generator=generator) / math.sqrt(32),
        )
        for _ in SCALES
    ]
    return x, _targets(x, teachers, generator), teachers


def _targets(
    x: Tensor, teachers: list[tuple[Tensor, Tensor]], generator: torch.Generator
) -> Tensor:
    columns = []
    for scale, (a, b) in zip(SCALES, teachers, strict=True):
        clean = torch.sin(x @ a) @ b
        clean = clean / clean.std()
        noise = 0.05 * torch.randn(len(x), generator=generator)
        columns.append(scale * (clean + noise))
    return torch.stack(columns, dim=1)


class Net(nn.Module):
    """A narrow shared trunk (the tasks must share its capacity) and one head per task."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in SCALES)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        z = self.trunk(x)
        # Each head predicts in its target's units (its output times the known scale), so every
        # task is equally easy to learn and only the scale of its loss differs.
        return {
            name: (scale * head(z).squeeze(1) - y[:, k]).pow(2).mean()
            for k, (name, head, scale) in enumerate(zip(NAMES, self.heads, SCALES, strict=True))
        }


@torch.no_grad()
def evaluate(model: Net, x: Tensor, y: Tensor) -> dict[str, float]:
    return {name: float(loss) for name, loss in model(x, y).items()}


def train(
    method: str, steps: int, seed: int, batch: int, data: tuple[Tensor, ...]
) -> tuple[dict[str, float], dict[str, float], float]:
    """Relative held-out loss per task (final / initial), last weights, seconds."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = Net(x_train.shape[1])
    balancer = METHODS[method]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    initial = evaluate(model, x_test, y_test)
    generator = torch.Generator().manual_seed(seed)
    used: dict[str, float] = {}
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(len(x_train), (batch,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        used = balancer.backward(model(x_train[index], y_train[index]), step=step)
        balancer.add_parameters_to(optimizer)
        optimizer.step()
        balancer.after_optimizer_step()
    seconds = time.perf_counter() - start
    final = evaluate(model, x_test, y_test)
    return {n: final[n] / initial[n] for n in NAMES}, used, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="runs per method (median reported)")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a small model: one thread is fastest, and fair to every method
    generator = torch.Generator().manual_seed(0)
    x, y, teachers = make_data(4096, 16, generator)
    x_test = torch.randn(2048, 16, generator=generator)
    y_test = _targets(x_test, teachers, generator)
    data = (x, y, x_test, y_test)

    header = "| method | " + " | ".join(NAMES) + " | spread (max/min) |"
    print(
        f"Relative held-out loss (final / initial), median of {args.seeds} seeds, "
        f"{args.steps} steps of Adam(lr=1e-3), batch {args.batch}\n"
    )
    print(header)
    print("|" + "---|" * (len(NAMES) + 2))
    for method in args.methods.split(","):
        runs = [train(method, args.steps, seed, args.batch, data) for seed in range(args.seeds)]
        median = {n: sorted(run[0][n] for run in runs)[len(runs) // 2] for n in NAMES}
        spread = max(median.values()) / min(median.values())
        cells = " | ".join(f"{median[n]:.3g}" for n in NAMES)
        print(f"| {method} | {cells} | {spread:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
