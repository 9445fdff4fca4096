"""Loss-weighting balancers against plain summation, per training step (issue 5).

A shared 3 x 512 MLP trunk with T linear heads (T = 2, 4, 8; batch 256), or with ``--heads mlp``
a 512-256-1 MLP per task. Each variant does one step: forward, per-task MSE losses, gradients
into ``.grad`` (``sum(losses).backward()`` for the baseline, ``balancer.apply`` for the rest),
``after_optimizer_step``. Variants run round after round in one process, each round in its own
shuffled order; we report medians, and ratios as medians of the per-round ratios (both steps of
a ratio ran in the same round). The baseline also runs a
second time under another name (the A/A row): how far its ratio is from 1 is the noise of the
run. Target: within 1.05x of Sum for every loss-weighting method, held against plain
summation (the stricter reading); the ratio to the ``Sum()`` balancer is printed too. GradNorm
is reported for both of its layer choices: on the last shared layer (the paper's; it needs T
per-task gradients of a 512 x 512 weight matrix, so it cannot be free) and on the shared
representation, where it reads the norms from the backward pass; the "per-loss pass" row is
the same where the heads cannot be told apart (a head shared by two losses) and the norms take
a pass of their own. With linear heads, a last row adds to the plain step only the cheapest
exact arithmetic of GradNorm's norms on the last shared layer (``LastLayerNorms``): the floor
of that layer choice.

    PYTHONPATH=src python benchmarks/bench_weighting.py [--quick] [--keep-heap] [--heads mlp]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from unittest.mock import patch

import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src")]

from multiloss.balancing import (  # noqa: E402
    DWA,
    FAMO,
    RLW,
    Balancer,
    GradNorm,
    Normalize,
    Scheduled,
    Static,
    Sum,
    Uncertainty,
)
from multiloss.balancing import context as context_module  # noqa: E402
from multiloss.schedules import Cosine  # noqa: E402

try:  # run as a module of the benchmarks package, or as a script
    from benchmarks._timing import (
        KEEP_HEAP_HELP,
        interleave_samples,
        keep_heap,
        paired_ratio,
        per_call,
    )
    from benchmarks.bench_balancing import make_head
except ImportError:  # pragma: no cover
    from _timing import (  # type: ignore[no-redef,import-not-found]
        KEEP_HEAP_HELP,
        interleave_samples,
        keep_heap,
        paired_ratio,
        per_call,
    )
    from bench_balancing import make_head  # type: ignore[no-redef,import-not-found]

WIDTH, DEPTH, BATCH = 512, 3, 256

METHODS: dict[str, Callable[[list[str]], Balancer]] = {
    "Sum": lambda names: Sum(),
    "Static": lambda names: Static({names[0]: 2.0}),
    "Scheduled": lambda names: Scheduled({names[0]: Cosine(1000)}),
    "Normalize": lambda names: Normalize(),
    "Uncertainty": lambda names: Uncertainty(),
    "DWA": lambda names: DWA(),
    "RLW": lambda names: RLW(),
    "FAMO": lambda names: FAMO(),
    "GradNorm(representation)": lambda names: GradNorm(layer="representation"),
    "GradNorm(last layer)": lambda names: GradNorm(),
}


class Trunk(nn.Module):
    def __init__(self, tasks: int, heads: str = "linear") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(DEPTH):
            layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(make_head(heads, WIDTH) for _ in range(tasks))

    def losses(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z = self.trunk(x)
        losses = {
            f"task{k}": (head(z).squeeze(1) - y[:, k]).pow(2).mean()
            for k, head in enumerate(self.heads)
        }
        return losses, z


class LastLayerNorms:
    """The cheapest exact arithmetic of GradNorm's norms on the last shared layer, for linear
    heads: ``||dY_i^T X||_F = sqrt(<(X X^T) dY_i, dY_i>)``, with ``X`` the layer's input and
    ``dY_i`` task ``i``'s gradient at its output in closed form (the head's weight times the
    mean squared error's derivative, through the ReLU), cheaper than any backward pass. Added
    to a plain step it is the floor of GradNorm on that layer, whatever the implementation."""

    def __init__(self, model: Trunk, y: torch.Tensor) -> None:
        self.model, self.y = model, y
        self.seen: dict[str, torch.Tensor] = {}
        layer = model.trunk[-2]  # the last Linear, before the last ReLU
        layer.register_forward_hook(lambda _, inputs, output: self._keep(inputs[0], output))

    def _keep(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.seen = {"x": x, "y": y}

    @torch.no_grad()
    def norms(self, z: torch.Tensor) -> list[float]:
        x, out = self.seen["x"], self.seen["y"]
        gram, mask = x @ x.T, (out > 0).to(out.dtype)
        norms = []
        for k, head in enumerate(self.model.heads):
            error = head(z).squeeze(1) - self.y[:, k]
            grad = (2.0 / len(error)) * error[:, None] * head.weight * mask
            norms.append(((gram @ grad) * grad).sum().sqrt())
        return torch.stack(norms).tolist()


def _per_loss_pass() -> AbstractContextManager[object]:
    """GradNorm as it runs where a head is shared by two losses: the norms at the
    representation from a per-loss pass before the backward pass, not read during it."""
    return patch.object(context_module, "find_capture", lambda *args: None)


AGAIN = "sum(losses).backward(), again (A/A)"
FLOOR = "sum(losses).backward() + GradNorm(last layer)'s norms alone (its floor)"


Step = Callable[[], None]


def step_makers(model: Trunk, x: torch.Tensor, y: torch.Tensor) -> tuple[Step, Callable[..., Step]]:
    """The baseline step on ``model`` (forward, per-task MSE, ``sum(losses).backward()``) and
    a maker of a balancer's step (``apply`` with the representation, ``after_optimizer_step``;
    ``around``: a context for ``apply``). Shared with ``ab_revision.py`` and ``step_parts.py``."""

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        losses, _ = model.losses(x, y)
        sum(losses.values()).backward()  # type: ignore[union-attr]

    def with_balancer(
        balancer: Balancer, around: Callable[[], AbstractContextManager[object]] = nullcontext
    ) -> Step:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            losses, z = model.losses(x, y)
            with around():
                balancer.apply(losses, representation=z)
            balancer.after_optimizer_step()

        return step

    return plain, with_balancer


def _measure(tasks: int, quick: bool, heads: str = "linear") -> list[dict[str, object]]:
    model = Trunk(tasks, heads)
    x, y = torch.randn(BATCH, WIDTH), torch.randn(BATCH, tasks)
    names = [f"task{k}" for k in range(tasks)]
    plain, with_balancer = step_makers(model, x, y)

    def again() -> None:  # the baseline twice: the spread between the two is the noise
        plain()

    variants: dict[str, Callable[[], None]] = {"sum(losses).backward()": plain}
    for name, make in METHODS.items():
        variants[name] = with_balancer(make(names))
    variants[AGAIN] = again
    if heads == "linear":
        floor = LastLayerNorms(model, y)
        losses, z = model.losses(x, y)
        layer = model.trunk[-2].weight
        exact = [
            float(torch.autograd.grad(loss, layer, retain_graph=True)[0].norm())
            for loss in losses.values()
        ]
        found = floor.norms(z)
        if not all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(found, exact, strict=True)):
            raise RuntimeError(f"the floor's norms {found} are not autograd's {exact}")

        def norms_alone() -> None:  # the plain step, plus the norms' arithmetic
            model.zero_grad(set_to_none=True)
            losses, z = model.losses(x, y)
            sum(losses.values()).backward()  # type: ignore[union-attr]
            floor.norms(z)

        variants[FLOOR] = norms_alone
    variants["GradNorm(representation), per-loss pass"] = with_balancer(
        GradNorm(layer="representation"), around=_per_loss_pass
    )
    # One step per sample and many rounds: on a shared machine the load changes within a
    # second, and fine interleaving spreads every variant over the same conditions.
    timers: dict[str, Callable[[], float]] = {
        name: partial(per_call, step, number=1) for name, step in variants.items()
    }
    samples = interleave_samples(timers, rounds=8 if quick else 120, warmup=2)
    base = samples["sum(losses).backward()"]
    # Ratios are medians of per-round ratios: both steps of a ratio ran in the same round,
    # close in time, which a ratio of two medians does not know (see _timing.paired_ratio).
    return [
        {
            "case": f"T={tasks} {name}",
            "ms": 1e3 * statistics.median(values),
            "ratio": paired_ratio(values, base),
            # The same against the Sum() balancer: what a method costs beyond the library's
            # own fixed work per call (the target above is held against plain summation).
            "ratio to Sum()": paired_ratio(values, samples["Sum"]),
            "target": _target(name),
        }
        for name, values in samples.items()
    ]


def _target(name: str) -> str:
    if name == AGAIN:
        return "1 (noise)"
    if name.startswith(("sum(", "GradNorm(last")) or name.endswith("per-loss pass"):  # (FLOOR too)
        return ""
    return "<= 1.05"


def run(quick: bool = False, heads: str = "linear") -> list[dict[str, object]]:
    """One row per (T, method): median ms per step, and the ratio to plain summation."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        # No optimizer steps the learned weights here (the model does not change either).
        warnings.filterwarnings("ignore", message="the parameters of .* receive gradients")
        return [row for tasks in (2, 4, 8) for row in _measure(tasks, quick, heads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-heap", action="store_true", help=KEEP_HEAP_HELP)
    parser.add_argument(
        "--heads",
        choices=("linear", "mlp"),
        default="linear",
        help="one linear layer per task, or a 512-256-1 MLP (GradNorm's per-loss pass then "
        "runs through every MLP)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="intra-op threads (1 on an oversubscribed machine)"
    )
    args = parser.parse_args()
    if args.keep_heap and not keep_heap():
        print("--keep-heap: not glibc, ignored")
    torch.set_num_threads(args.threads)
    rows = run(quick=args.quick, heads=args.heads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| case | ms / step | ratio to sum | ratio to Sum() | target |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['ms']:.2f} | {row['ratio']:.3f} | "
            f"{row['ratio to Sum()']:.3f} | {row['target']} |"
        )


if __name__ == "__main__":
    main()
