"""The two-objective toy problem of CAGrad, Nash-MTL and FAMO, with every balancing method.

The problem (x in R^2, two losses) is the one of the CAGrad paper's official ``toy.py``
(github.com/Cranial-XIX/CAGrad), in the scaled variant of the Nash-MTL paper (github.com/
AvivNavon/nash-mtl ``experiments/toy/problem.py`` and ``trainer.py``): the first loss is
multiplied by 0.1, the five starting points are (-8.5, 7.5), (0, 0), (9, 9), (-7.5, -0.5) and
(9, -1), and each run takes 35,000 Adam steps of learning rate 1e-3 (FAMO's ``experiments/toy``
reuses it with 50,000). Each method runs through the public API, ``balancer.backward(losses,
shared=[x])``, with the settings of the official toy scripts: CAGrad ``c = 0.4``, MGDA without
normalization, Nash-MTL clipping to norm 1, FAMO with ``gamma = 0``, lower bounds
``(-21 * 0.1, -21)`` and its official clipping of the update to norm 1.

Run ``python examples/toy_pareto.py`` (about 1 ms per step and run; ``--jobs 2`` uses two
processes, ``--steps 2000`` for a quick look). It prints a table of where each run ends and
writes ``toy_pareto.png`` (trajectories over the contours of the mean loss, in x space) and
``toy_pareto_losses.png`` (the same runs in loss space, as in the papers' figures).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from multiloss.balancing import (
    FAMO,
    IMTL,
    MGDA,
    AlignedMTL,
    Balancer,
    CAGrad,
    NashMTL,
    PCGrad,
    Sum,
    UPGrad,
)
from multiloss.balancing.aligned_mtl import aligned_mtl_weights
from multiloss.balancing.cagrad import cagrad_weights
from multiloss.balancing.imtl import imtl_weights
from multiloss.balancing.mgda import mgda_weights
from multiloss.balancing.nashmtl import nash_weights
from multiloss.balancing.pcgrad import pcgrad_weights
from multiloss.balancing.upgrad import upgrad_weights

LOWER = 0.000005  # the official clamp inside the logarithms
INITS = [(-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0)]
SCALE = 0.1  # weight of the first loss in the Nash-MTL / FAMO setting
#: name -> (factory, clip the shared update to norm 1 as the official code does)
METHODS: dict[str, tuple[Callable[[], Balancer], bool]] = {
    "Sum (LS)": (Sum, False),
    "PCGrad": (PCGrad, False),
    "CAGrad": (lambda: CAGrad(c=0.4), False),
    "MGDA": (MGDA, False),
    "IMTL-G": (IMTL, False),
    "Nash-MTL": (NashMTL, False),  # clips to max_norm = 1 itself
    "Aligned-MTL": (AlignedMTL, False),
    "UPGrad": (UPGrad, False),
    "FAMO": (lambda: FAMO(gamma=0.0, lower_bound={"l1": -21 * SCALE, "l2": -21.0}), True),
}


def _nash(gram: Tensor, state: dict[str, Tensor]) -> Tensor:
    alpha, _ = nash_weights(gram, state.get("alpha"))
    state["alpha"] = alpha  # warm start, as NashMTL's buffer
    norm = (alpha @ gram @ alpha).clamp(min=0).sqrt()
    return alpha * (1.0 / (norm + 1e-6)).clamp(max=1.0)  # max_norm = 1, as NashMTL


#: The weight functions the gradient-level balancers call on the Gram matrix (the fast path).
WEIGHTS: dict[str, Callable[[Tensor, dict[str, Tensor]], Tensor]] = {
    "PCGrad": lambda gram, state: pcgrad_weights(gram),
    "CAGrad": lambda gram, state: cagrad_weights(gram, 0.4),
    "MGDA": lambda gram, state: mgda_weights(gram)[0],
    "IMTL-G": lambda gram, state: imtl_weights(gram),
    "Nash-MTL": _nash,
    "Aligned-MTL": lambda gram, state: aligned_mtl_weights(gram),
    "UPGrad": lambda gram, state: upgrad_weights(gram),
}


def toy_losses(x: Tensor, scale: float = SCALE) -> tuple[Tensor, Tensor]:
    """The two losses at ``x`` (shape (..., 2)), as in the official ``Toy.forward``."""
    x1, x2 = x[..., 0], x[..., 1]
    f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOWER).log() + 6
    f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOWER).log() + 6
    c1 = torch.clamp(torch.tanh(x2 * 0.5), 0)
    f1_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    f2_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    c2 = torch.clamp(torch.tanh(-x2 * 0.5), 0)
    return (f1 * c1 + f1_sq * c2) * scale, f2 * c1 + f2_sq * c2


def run_api(method: str, init: int, steps: int, every: int) -> np.ndarray:
    """One run from ``INITS[init]`` through ``balancer.backward``; the trajectory every
    ``every`` steps (and the last point)."""
    torch.set_num_threads(1)
    torch.manual_seed(init)  # PCGrad's random projection order
    factory, clip = METHODS[method]
    balancer = factory()
    x = torch.nn.Parameter(torch.tensor(INITS[init], dtype=torch.float32))
    optimizer = torch.optim.Adam([x], lr=1e-3)
    trajectory = []
    for step in range(steps):
        if step % every == 0:
            trajectory.append(x.detach().numpy().copy())
        optimizer.zero_grad()
        l1, l2 = toy_losses(x)
        balancer.backward({"l1": l1, "l2": l2}, shared=[x])
        if clip:
            torch.nn.utils.clip_grad_norm_([x], 1.0)
        optimizer.step()
    trajectory.append(x.detach().numpy().copy())
    return np.stack(trajectory)


def run_fast(method: str, steps: int, every: int) -> list[np.ndarray]:
    """All five runs of a gradient-level method at once (about 5x faster than ``run_api``).

    Same computation as ``balancer.backward(losses, shared=[x])``: the 2 x 2 Jacobian of the
    two losses, its Gram matrix, the method's weight function (the one its ``weigh`` calls),
    the update ``w @ J``. The five starts are independent rows of one parameter, and Adam is
    elementwise, so this is exactly five separate runs; ``--check`` compares with the API.
    """
    torch.set_num_threads(1)
    x = torch.nn.Parameter(torch.tensor(INITS, dtype=torch.float32))
    optimizer = torch.optim.Adam([x], lr=1e-3)
    states: list[dict[str, Tensor]] = [{} for _ in INITS]
    generators = [torch.Generator().manual_seed(i) for i in range(len(INITS))]
    trajectory = []
    for step in range(steps):
        if step % every == 0:
            trajectory.append(x.detach().numpy().copy())
        l1, l2 = toy_losses(x)
        (g1,) = torch.autograd.grad(l1.sum(), x, retain_graph=True)
        (g2,) = torch.autograd.grad(l2.sum(), x)
        jacobians = torch.stack([g1, g2], dim=1)  # (5 starts, 2 losses, 2)
        grams = jacobians @ jacobians.mT
        updates = []
        for k in range(len(INITS)):
            torch.set_rng_state(generators[k].get_state())  # per-run PCGrad orders
            weights = WEIGHTS[method](grams[k], states[k])
            generators[k].set_state(torch.get_rng_state())
            updates.append(weights.to(jacobians) @ jacobians[k])
        x.grad = torch.stack(updates)
        optimizer.step()
    trajectory.append(x.detach().numpy().copy())
    return list(np.stack(trajectory).transpose(1, 0, 2))


def pareto_set(points: int = 281) -> np.ndarray:
    """The Pareto set in x space: minimizers of ``a l1 + (1 - a) l2`` over a grid of ``a``.

    Computed on the unscaled losses (scaling one loss only reparametrizes ``a``), with
    scipy from a start near the front; the result is a curve close to ``x2 = -8.36``.
    """
    from scipy.optimize import minimize

    out = []
    for a in np.linspace(0.0, 1.0, points):

        def objective(v: np.ndarray, a: float = a) -> tuple[float, np.ndarray]:
            x = torch.tensor(v, dtype=torch.float64, requires_grad=True)
            l1, l2 = toy_losses(x, 1.0)
            total = a * l1 + (1 - a) * l2
            (grad,) = torch.autograd.grad(total, x)
            return float(total.detach()), grad.numpy()

        start = np.array([14.0 * a - 7.0, -8.36])
        out.append(minimize(objective, start, jac=True, method="BFGS", tol=1e-12).x)
    return np.stack(out)


def distance_to(curve: np.ndarray, point: np.ndarray) -> float:
    """Euclidean distance from ``point`` to the polyline ``curve``."""
    a, b = curve[:-1], curve[1:]
    ab = b - a
    t = np.clip(((point - a) * ab).sum(1) / (ab * ab).sum(1).clip(1e-300), 0, 1)
    return float(np.linalg.norm(a + t[:, None] * ab - point, axis=1).min())


def table(results: dict[str, list[np.ndarray]], front: np.ndarray, tol: float) -> str:
    """Markdown: per method, where each of the five runs ends."""
    lines = [
        "| method | runs on the Pareto set | final x (per start) | final (l1, l2) (per start) |",
        "| --- | --- | --- | --- |",
    ]
    for method, runs in results.items():
        ends = [traj[-1] for traj in runs]
        on = [distance_to(front, end) < tol for end in ends]
        xs = "; ".join(f"({e[0]:.2f}, {e[1]:.2f})" for e in ends)
        values = [toy_losses(torch.tensor(e, dtype=torch.float64)) for e in ends]
        ls = "; ".join(f"({float(a):.2f}, {float(b):.2f})" for a, b in values)
        marks = "".join("Y" if flag else "n" for flag in on)
        lines.append(f"| {method} | {sum(on)}/5 ({marks}) | {xs} | {ls} |")
    return "\n".join(lines)


def plot(results: dict[str, list[np.ndarray]], front: np.ndarray, out: Path) -> list[Path]:
    """Trajectories over the mean-loss contours (x space) and in loss space; two PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-10, 10, 301)
    xx, yy = np.meshgrid(grid, grid)
    l1, l2 = toy_losses(torch.tensor(np.stack([xx, yy], -1), dtype=torch.float64))
    mean = (0.5 * (l1 + l2)).numpy()
    front_losses = [v.numpy() for v in toy_losses(torch.tensor(front, dtype=torch.float64))]
    cols = 3
    rows = -(-len(results) // cols)
    paths = []
    for kind in ("x", "losses"):
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows), squeeze=False)
        for ax, (method, runs) in zip(axes.flat, results.items(), strict=False):
            if kind == "x":
                ax.contour(xx, yy, mean, levels=25, cmap="viridis", linewidths=0.8)
                ax.plot(front[:, 0], front[:, 1], color="0.45", lw=5, alpha=0.6, zorder=1)
            else:
                ax.plot(*front_losses, color="0.45", lw=5, alpha=0.6, zorder=1)
            for traj in runs:
                shown = (
                    traj
                    if kind == "x"
                    else np.stack(
                        [v.numpy() for v in toy_losses(torch.tensor(traj, dtype=torch.float64))], 1
                    )
                )
                colors = plt.cm.plasma(np.linspace(0.0, 0.9, len(shown)))
                ax.scatter(shown[:, 0], shown[:, 1], c=colors, s=1.5, zorder=2)
                ax.scatter(*shown[0], color="k", s=25, zorder=3)
                ax.scatter(*shown[-1], color="red", marker="*", s=70, zorder=4)
            ax.set_title(method)
            ax.set_xlabel("x1" if kind == "x" else "l1 (scaled by 0.1)")
            ax.set_ylabel("x2" if kind == "x" else "l2")
        for ax in list(axes.flat)[len(results) :]:
            ax.axis("off")
        what = "mean-loss contours, x space" if kind == "x" else "loss space"
        fig.suptitle(f"Toy problem (Nash-MTL scaled setting), {what}; grey: Pareto set")
        fig.tight_layout()
        path = out if kind == "x" else out.with_name(out.stem + "_losses" + out.suffix)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def run_sum(steps: int, every: int) -> list[np.ndarray]:
    """The five Sum runs in one call: ``Sum().backward`` of the ten losses (Sum is separable,
    each start's parameters only see its own two losses)."""
    torch.set_num_threads(1)
    x = torch.nn.Parameter(torch.tensor(INITS, dtype=torch.float32))
    optimizer = torch.optim.Adam([x], lr=1e-3)
    balancer = Sum()
    trajectory = []
    for step in range(steps):
        if step % every == 0:
            trajectory.append(x.detach().numpy().copy())
        optimizer.zero_grad()
        l1, l2 = toy_losses(x)
        losses = {f"l{j}/{k}": loss[k] for j, loss in ((1, l1), (2, l2)) for k in range(len(INITS))}
        balancer.backward(losses)
        optimizer.step()
    trajectory.append(x.detach().numpy().copy())
    return list(np.stack(trajectory).transpose(1, 0, 2))


def _job(method: str, steps: int, every: int, api: bool) -> list[np.ndarray]:
    if method in WEIGHTS and not api:
        return run_fast(method, steps, every)
    if method == "Sum (LS)" and not api:
        return run_sum(steps, every)
    return [run_api(method, i, steps, every) for i in range(len(INITS))]


def check(methods: list[str], steps: int = 300) -> None:
    """The fast path must follow the API path step for step (first start, ``steps`` steps)."""
    for method in methods:
        if method in WEIGHTS or method == "Sum (LS)":
            fast = _job(method, steps, 1, api=False)[0]
            api = run_api(method, 0, steps, 1)
            gap = float(np.abs(fast - api).max())
            if gap > 1e-4:
                raise AssertionError(f"{method}: fast path and API differ by {gap:.2e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=35_000, help="Adam steps per run")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument("--every", type=int, default=25, help="record every n steps")
    parser.add_argument("--tol", type=float, default=0.05, help="'on the Pareto set' radius")
    parser.add_argument("--api", action="store_true", help="every run through the Balancer API")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("toy_pareto.png"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if not args.api:
        check(args.methods)
    # "spawn": a forked child would inherit the parent's OpenMP state and can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        jobs = [pool.submit(_job, m, args.steps, args.every, args.api) for m in args.methods]
        results = {m: job.result() for m, job in zip(args.methods, jobs, strict=True)}
    front = pareto_set()
    print(f"{args.steps} Adam steps per run, {time.perf_counter() - start:.0f} s\n")
    print(table(results, front, args.tol))
    for path in plot(results, front, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
