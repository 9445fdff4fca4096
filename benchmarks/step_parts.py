"""Where one balancer step's time goes, measured inside the step (not part by part alone).

Small tensor operations run several times slower after the large products of a backward pass
than in a tight loop of their own, so ``bench_balancing.py --breakdown`` (parts alone)
understates the fixed costs. This wraps the balancer's internal stages with timers and runs
whole steps of ``sum``, ``loop`` and the chosen method interleaved, printing the median time of
each stage per step (a stage's time includes the stages it calls).

    PYTHONPATH=src:. python benchmarks/step_parts.py --tasks 2 --method UPGrad [--rep] [--keep-heap]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

import multiloss.balancing._execute as execute_module
import multiloss.balancing._jacobian as jacobian_module
import multiloss.balancing.base as base_module
import multiloss.balancing.context as context_module
from multiloss import balancing

try:  # run as a module of the benchmarks package, or as a script
    from benchmarks._timing import KEEP_HEAP_HELP, keep_heap
    from benchmarks.bench_balancing import Problem, variants
except ImportError:  # pragma: no cover
    from _timing import KEEP_HEAP_HELP, keep_heap  # type: ignore[no-redef]
    from bench_balancing import Problem, variants  # type: ignore[no-redef]

_spent: defaultdict[str, float] = defaultdict(float)


def _wrap(owner: Any, name: str, label: str) -> None:
    real = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _spent[label] += time.perf_counter() - start

    setattr(owner, name, timed)


def _instrument(problem: Problem, method: str) -> None:
    chosen = getattr(balancing, method)
    if "weigh" in vars(chosen):
        _wrap(chosen, "weigh", "  solver (the method's weigh)")
    _wrap(problem, "losses", "forward")
    _wrap(problem.optimizer, "step", "optimizer step")
    _wrap(torch.autograd, "backward", "backward passes (loop, sum, heads, final)")
    _wrap(context_module._Session, "jacobian", "per-loss gradients (all of it)")
    _wrap(context_module._Session, "graph", "  graph walk")
    _wrap(context_module, "gradients_at", "  engine")
    _wrap(jacobian_module.Jacobian, "gramian", "Gramian")
    _wrap(jacobian_module.Jacobian, "combine", "update J^T w")
    _wrap(base_module.Balancer, "plan_for", "plan (gradients, Gramian, solver)")
    _wrap(base_module.Balancer, "apply", "apply (all of the balancer)")
    _wrap(execute_module, "execute", "execute (update, backward)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--method", default="UPGrad")
    parser.add_argument("--rep", action="store_true", help="the representation level")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-heap", action="store_true", help=KEEP_HEAP_HELP)
    args = parser.parse_args()
    if args.keep_heap and not keep_heap():
        print("--keep-heap: not glibc, ignored")
    torch.set_num_threads(args.threads)
    problem = Problem(args.tasks)
    ours = f"ours{'-rep' if args.rep else ''}/{args.method}"
    steps = variants(problem, [args.method], torchjd=False)
    chosen: dict[str, Callable[[], None]] = {k: steps[k] for k in ("sum", "loop", ours)}
    _instrument(problem, args.method)
    for step in chosen.values():  # warm-up
        step()
    samples: defaultdict[str, list[float]] = defaultdict(list)
    for round_ in range(args.rounds):
        order = list(chosen.items())
        if round_ % 2:
            order.reverse()
        for name, step in order:
            _spent.clear()
            start = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - start)
            for label, seconds in _spent.items():
                samples[f"{name}: {label}"].append(seconds)
    print(f"T = {args.tasks}, medians over {args.rounds} rounds, ms per step\n")
    print("| variant: stage | ms |\n|---|---|")
    for key, values in samples.items():
        print(f"| {key} | {1e3 * statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
