"""Gradient-level balancers (issue 5): per-step time against torchjd and a retain_graph loop.

A shared trunk of three 512-wide linear layers (ReLU) on a batch of 256, with T linear heads
and one MSE loss per head (T = 2, 4, 8). One step is: forward, the method's backward, an SGD
step. Variants, timed in turn (each round in its own shuffled order) in one process:

* ``sum``: ``sum(losses).backward()``, the floor of any method;
* ``loop``: the plain loop of the official implementations: ``loss_t.backward(retain_graph=True)``
  for each t, copying the shared gradients into a (T, P) Jacobian after each, then writing
  their sum back (the arithmetic floor of an exact Jacobian: T backward passes);
* ``ours``: ``Method().apply(losses, step=...)`` (shared parameters found automatically);
* ``ours-dense`` (``--dense``): the same with ``use_factored_gradients(False)``: every
  Jacobian row formed, as before linear layers were kept factored;
* ``ours-rep``: ``Method(level="representation")`` (per-loss gradients w.r.t. the trunk
  output only, then one backward pass); with ``--heads mlp`` also ``ours-rep-twice``, the same
  with every head run backward again in the final pass (the route where the heads' gradients
  cannot come from the per-loss passes);
* ``torchjd``: ``mtl_backward(losses, features=z)`` then ``jac_to_grad(shared, Aggregator())``.

Times are medians over rounds. Ratios are medians of per-round ratios (both steps of a ratio
ran in the same round, close in time: ``_timing.paired_ratio``); the loop runs a second time
under another name (the A/A row), whose distance from 1 is the noise of the run. Peak memory
(``--memory``) is measured per variant in a fresh process as the growth of the peak resident
set over the set-up (model, data, imports) during three steps; the ``sum`` row is the
reference (CPU; the CUDA allocator's peak when on a GPU).
``python benchmarks/bench_balancing.py [--quick] [--memory] [--keep-heap] [--heads mlp]``
(``--keep-heap``: glibc keeps freed memory, see ``_timing.keep_heap``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F
from torch import nn

from multiloss import balancing as mb
from multiloss.balancing import context as mb_context

try:  # run as a module of the benchmarks package, or as a script
    from benchmarks._timing import KEEP_HEAP_HELP, interleave_samples, keep_heap, paired_ratio
except ImportError:  # pragma: no cover
    from _timing import (  # type: ignore[no-redef]
        KEEP_HEAP_HELP,
        interleave_samples,
        keep_heap,
        paired_ratio,
    )

Step = Callable[[], None]
METHODS = ["UPGrad", "MGDA", "PCGrad", "CAGrad", "IMTL", "NashMTL", "AlignedMTL"]
TORCHJD = {  # our name -> torchjd aggregator factory (given T)
    "UPGrad": lambda t, jd: jd.UPGrad(),
    "MGDA": lambda t, jd: jd.MGDA(),
    "PCGrad": lambda t, jd: jd.PCGrad(),
    "CAGrad": lambda t, jd: jd.CAGrad(c=0.4),
    "IMTL": lambda t, jd: jd.IMTLG(),
    "NashMTL": lambda t, jd: jd.NashMTL(n_tasks=t),
    "AlignedMTL": lambda t, jd: jd.AlignedMTL(),
}


class Problem(nn.Module):
    """Trunk of ``depth`` linear layers of ``width``, T heads (linear, or ``heads="mlp"``: a
    ``width``-``width / 2``-1 MLP each), fixed random data."""

    def __init__(
        self,
        tasks: int,
        *,
        width: int = 512,
        depth: int = 3,
        batch: int = 256,
        heads: str = "linear",
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(make_head(heads, width) for _ in range(tasks))
        self.x = torch.randn(batch, width)
        self.y = torch.randn(batch, tasks) * torch.logspace(0, 1, tasks)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=1e-6)

    def losses(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z = self.trunk(self.x)
        return z, {
            f"task{i}": F.mse_loss(head(z).squeeze(1), self.y[:, i])
            for i, head in enumerate(self.heads)
        }


def _heads_run_again() -> AbstractContextManager[object]:
    """The representation level as it runs where the losses reach the trunk around ``z``:
    every head run backward again in the final pass."""
    return patch.object(mb_context, "heads_above", lambda *args: None)


def make_head(kind: str, width: int) -> nn.Module:
    """One task's head on a ``width``-wide representation: ``"linear"`` or ``"mlp"``."""
    if kind == "linear":
        return nn.Linear(width, 1)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, 1))
    raise ValueError(f"`heads` must be 'linear' or 'mlp'; got {kind!r}")


def variants(
    problem: Problem,
    methods: list[str],
    torchjd: bool,
    dense: bool = False,
    twice: bool = False,
) -> dict[str, Step]:
    """Every variant as a closure performing one full step (``dense``: also ours with every
    Jacobian row formed, ``use_factored_gradients(False)``; ``twice``: also the representation
    level running every head again in its final pass, the route taken where the losses reach
    the trunk around ``z``)."""
    shared = list(problem.trunk.parameters())
    out: dict[str, Step] = {}

    def step_with(backward: Callable[[torch.Tensor, dict[str, torch.Tensor]], None]) -> Step:
        count = [0]

        def step() -> None:
            problem.optimizer.zero_grad(set_to_none=True)
            z, losses = problem.losses()
            backward(z, losses)
            problem.optimizer.step()
            count[0] += 1

        return step

    out["sum"] = step_with(lambda z, losses: sum(losses.values()).backward())  # type: ignore[union-attr]
    sizes = [p.numel() for p in shared]
    jac = torch.empty(len(problem.heads), sum(sizes))

    def loop(z: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        values = list(losses.values())
        for t, loss in enumerate(values):
            loss.backward(retain_graph=t < len(values) - 1)
            torch.cat([p.grad.reshape(-1) for p in shared], out=jac[t])  # type: ignore[union-attr]
            for p in shared:
                p.grad = None
        total = jac.sum(dim=0)
        for p, part in zip(shared, total.split(sizes), strict=True):
            p.grad = part.view_as(p)

    out["loop"] = step_with(loop)
    jd = _torchjd() if torchjd else None
    levels = [("parameters", ""), ("representation", "-rep")]
    if dense:
        levels.append(("parameters", "-dense"))
    if twice:
        levels.append(("representation", "-rep-twice"))
    for name in methods:
        for level, suffix in levels:
            balancer = getattr(mb, name)(level=level)
            if suffix == "-dense":
                balancer.use_factored_gradients(False)

            def apply(
                z: torch.Tensor,
                losses: dict[str, torch.Tensor],
                b: mb.Balancer = balancer,
                again: bool = suffix == "-rep-twice",
            ) -> None:
                with _heads_run_again() if again else nullcontext():
                    b.apply(losses, step=0, representation=z)
                b.after_optimizer_step()

            out[f"ours{suffix}/{name}"] = step_with(apply)
        if jd is not None and name in TORCHJD:
            aggregator = TORCHJD[name](len(problem.heads), jd.aggregation)

            def with_torchjd(z: torch.Tensor, losses: dict[str, torch.Tensor], a=aggregator):
                jd.autojac.mtl_backward(list(losses.values()), features=z)
                jd.autojac.jac_to_grad(shared, a)

            out[f"torchjd/{name}"] = step_with(with_torchjd)
    return out


def _torchjd():  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("torchjd") is None:
        return None
    import torchjd
    import torchjd.aggregation
    import torchjd.autojac

    return torchjd


def time_samples(steps: dict[str, Step], rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each round's step of each variant; variants in turn, each round shuffled
    (sample ``k`` of every variant comes from the same round: see ``paired_ratio``)."""

    def timed(step: Step) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            step()
            return time.perf_counter() - start

        return measure

    timers = {name: timed(step) for name, step in steps.items()}
    return interleave_samples(timers, rounds=rounds, warmup=warmup)


def time_steps(steps: dict[str, Step], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per step of each variant (:func:`time_samples`)."""
    samples = time_samples(steps, rounds, warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_memory(tasks: int, variant: str, heads: str = "linear") -> float:
    """MB of peak resident memory that three steps of ``variant`` add to the set-up (model,
    data, imports), measured in a fresh process; compare with the ``sum`` row."""
    code = (
        "import sys, json; sys.path[:0] = sys.argv[1:3]; "
        "from benchmarks.bench_balancing import _measure; "
        f"print(json.dumps(_measure({tasks}, {variant!r}, {heads!r})))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code, str(root / "src"), str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB.

    Not ``getrusage``: Linux carries ``ru_maxrss`` across ``exec``, so a child started by a
    large benchmark process reports at least its parent's peak and hides its own growth.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def _measure(tasks: int, variant: str, heads: str = "linear") -> float:
    torch.set_num_threads(2)
    problem = Problem(tasks, heads=heads)
    methods = [variant.split("/")[1]] if "/" in variant else []
    steps = variants(problem, methods, True, dense=variant.startswith("ours-dense"))
    # No warm-up step: the allocator would keep its pages and hide the variant's own peak.
    base = _peak_rss_mb()
    for _ in range(3):
        steps[variant]()
    return _peak_rss_mb() - base


AGAIN = "loop, again (A/A)"


def _row(
    base: dict[str, int], key: str, samples: dict[str, list[float]], method: str | None = None
) -> dict[str, object]:
    """A variant's median step and its ratios: medians of the per-round ratios to the loop,
    to ``sum`` and (``method``: ours against torchjd's) to torchjd's step of the same round."""
    row: dict[str, object] = {**base, "case": key, "ms": 1e3 * statistics.median(samples[key])}
    row["/ loop"] = paired_ratio(samples[key], samples["loop"])
    row["/ sum"] = paired_ratio(samples[key], samples["sum"])
    if method is not None and f"torchjd/{method}" in samples:
        row["/ torchjd"] = paired_ratio(samples[key], samples[f"torchjd/{method}"])
    return row


def run(
    quick: bool = False,
    memory: bool = False,
    threads: int = 2,
    rounds: int | None = None,
    tasks_list: tuple[int, ...] | None = None,
    dense: bool = False,
    heads: str = "linear",
) -> list[dict]:
    """Rows of the table: one per (T, method, implementation)."""
    torch.set_num_threads(min(threads, os.cpu_count() or 1))
    rows: list[dict] = []
    for tasks in tasks_list or ((2, 8) if quick else (2, 4, 8)):
        problem = Problem(tasks, heads=heads)
        count = rounds or (5 if quick else 15)
        twice = heads != "linear"  # single linear heads keep the older route anyway
        steps = variants(problem, METHODS, True, dense, twice)
        steps[AGAIN] = steps["loop"]  # the A/A row: how far it reads from 1 is the noise
        samples = time_samples(steps, rounds=count)
        base = {"T": tasks}
        for name in ("sum", "loop"):
            rows.append({**base, "case": name, "ms": 1e3 * statistics.median(samples[name])})
        rows.append(_row(base, AGAIN, samples))
        for name in METHODS:
            for impl in ("ours", "ours-dense", "ours-rep", "ours-rep-twice", "torchjd"):
                key = f"{impl}/{name}"
                if key in samples:
                    against = name if impl in ("ours", "ours-dense") else None  # vs torchjd
                    rows.append(_row(base, key, samples, against))
        if memory:
            for row in rows:
                if row["T"] == tasks and row["case"] != AGAIN:
                    row["peak MB"] = peak_memory(tasks, row["case"], heads)
    return rows


def breakdown(tasks: int = 8, rounds: int = 15) -> list[dict]:
    """Where the time of a parameter-level step goes, part by part (interleaved, medians)."""
    from multiloss.balancing._factored import assemble, factored_targets, find_factored
    from multiloss.balancing._jacobian import Engine, Jacobian, gradients_at, per_loss_gradients
    from multiloss.balancing.shared import discover
    from multiloss.balancing.upgrad import upgrad_solve

    problem = Problem(tasks)
    shared = list(problem.trunk.parameters())
    buffers = Engine().buffers(tasks, shared)
    _, losses = problem.losses()
    blocks, _ = per_loss_gradients(list(losses.values()), shared, retain_graph=False)
    jacobian = Jacobian(blocks)
    gram = jacobian.gramian()
    _, duals = upgrad_solve(gram)
    _, losses = problem.losses()
    values = list(losses.values())
    found = find_factored(discover(values), shared, tasks)
    targets, spans = factored_targets(shared, found)
    factored_buffers = Engine().buffers(tasks, targets)
    grads, _ = gradients_at(values, targets, retain_graph=False, batched=False)
    factored = Jacobian(assemble(shared, found, grads, spans))  # as the balancer builds it

    def engine(batched: bool) -> Step:
        def run() -> None:
            _, losses = problem.losses()
            per_loss_gradients(
                list(losses.values()), shared, retain_graph=False, batched=batched, out=buffers
            )

        return run

    def factored_engine() -> None:
        _, losses = problem.losses()
        values = list(losses.values())
        walked = find_factored(discover(values), shared, tasks)
        targets, _ = factored_targets(shared, walked)
        gradients_at(values, targets, retain_graph=False, batched=False, out=factored_buffers)

    def loop() -> None:
        _, losses = problem.losses()
        values = list(losses.values())
        for t, loss in enumerate(values):
            torch.autograd.grad(loss, shared, retain_graph=t < tasks - 1)

    def gramian(jac: Jacobian) -> Step:
        def run() -> None:
            jac._raw_gramian = None
            for part in jac.parts:
                if hasattr(part, "_kernel"):
                    part._kernel.clear()  # X X^T is part of the factored Gramian's cost
            jac.gramian()

        return run

    parts: dict[str, Step] = {
        "forward + sum backward": lambda: sum(problem.losses()[1].values()).backward(),  # type: ignore[union-attr]
        "forward + T x autograd.grad (gradients dropped)": loop,
        "forward + CPU engine (loop into kept buffers)": engine(False),
        "forward + batched engine (vmap; accelerators)": engine(True),
        "forward + factored engine (walk, loop to layer outputs)": factored_engine,
        "Gram matrix J J^T": gramian(jacobian),
        "Gram matrix, factored blocks": gramian(factored),
        "UPGrad weights (solver, warm start)": lambda: upgrad_solve(gram, start=duals),
        "update J^T w": lambda: jacobian.combine(torch.ones(tasks)),
        "update J^T w, factored blocks": lambda: factored.combine(torch.ones(tasks)),
    }
    medians = time_steps(parts, rounds)
    return [{"T": tasks, "part": k, "ms": 1e3 * v} for k, v in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-heap", action="store_true", help=KEEP_HEAP_HELP)
    parser.add_argument("--memory", action="store_true", help="peak memory, one process each")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--breakdown", action="store_true", help="time the parts of a step")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 15; quick 5)")
    parser.add_argument("--tasks", type=int, nargs="+", default=None, help="values of T")
    parser.add_argument(
        "--dense", action="store_true", help="also ours with every Jacobian row formed"
    )
    parser.add_argument(
        "--heads", choices=("linear", "mlp"), default="linear", help="a linear layer or an MLP"
    )
    args = parser.parse_args()
    if args.keep_heap and not keep_heap():
        print("--keep-heap: not glibc, ignored")
    if args.breakdown:
        torch.set_num_threads(args.threads)
        rows = breakdown()
    else:
        tasks = tuple(args.tasks) if args.tasks else None
        rows = run(
            args.quick, args.memory, args.threads, args.rounds, tasks, args.dense, args.heads
        )
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        cells = [
            f"{row[k]:.3g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
