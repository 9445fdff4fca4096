"""Where one balancer step's time goes, measured inside the step (not part by part alone).

Small tensor operations run several times slower after the large products of a backward pass
than in a tight loop of their own, so ``bench_balancing.py --breakdown`` (parts alone)
understates the fixed costs. This wraps the balancer's internal stages with timers and runs
whole steps of ``sum``, ``loop`` and the chosen method interleaved, printing the median time of
each stage per step (a stage's time includes the stages it calls).

    PYTHONPATH=src:. python benchmarks/step_parts.py --tasks 2 --method UPGrad [--rep] [--keep-heap]

A loss-weighting method (a name of ``bench_weighting.METHODS``: ``FAMO``,
``"GradNorm(representation)"``...) runs on ``bench_weighting``'s problem instead, against plain
summation and the ``Sum()`` balancer, with the stages of ``apply`` and ``after_optimizer_step``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
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
    from benchmarks._timing import KEEP_HEAP_HELP, keep_heap, paired_ratio
    from benchmarks.bench_balancing import Problem, variants
    from benchmarks.bench_weighting import BATCH, METHODS, WIDTH, Trunk, step_makers
except ImportError:  # pragma: no cover
    from _timing import KEEP_HEAP_HELP, keep_heap, paired_ratio  # type: ignore[no-redef]
    from bench_balancing import Problem, variants  # type: ignore[no-redef]
    from bench_weighting import (  # type: ignore[no-redef]
        BATCH,
        METHODS,
        WIDTH,
        Trunk,
        step_makers,
    )

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


def _weighting_steps(tasks: int, method: str) -> dict[str, Callable[[], None]]:
    """Plain summation, ``Sum()`` and ``method`` on ``bench_weighting``'s problem, with the
    stages of a loss-weighting step timed."""
    model = Trunk(tasks)
    plain, with_balancer = step_makers(model, torch.randn(BATCH, WIDTH), torch.randn(BATCH, tasks))
    names = [f"task{k}" for k in range(tasks)]
    _wrap(model, "losses", "forward")
    _wrap(torch.autograd, "backward", "backward pass")
    _wrap(base_module.Balancer, "_check_finite", "  finiteness check")
    _wrap(base_module.Balancer, "plan_for", "  plan (the method's weights)")
    _wrap(base_module, "execute", "  execute (backward pass, and what the method adds)")
    _wrap(base_module.Balancer, "apply", "apply (all of it)")
    _wrap(base_module.Balancer, "after_optimizer_step", "after_optimizer_step")

    return {
        "sum": plain,
        "Sum()": with_balancer(METHODS["Sum"](names)),
        method: with_balancer(METHODS[method](names)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--method", default="UPGrad")
    parser.add_argument(
        "--rep", action="store_true", help="the representation level (gradient-level methods)"
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-heap", action="store_true", help=KEEP_HEAP_HELP)
    args = parser.parse_args()
    if args.keep_heap and not keep_heap():
        print("--keep-heap: not glibc, ignored")
    torch.set_num_threads(args.threads)
    chosen: dict[str, Callable[[], None]]
    if args.method in METHODS:
        warnings.filterwarnings("ignore", message="the parameters of .* receive gradients")
        chosen = _weighting_steps(args.tasks, args.method)
    else:
        problem = Problem(args.tasks)
        ours = f"ours{'-rep' if args.rep else ''}/{args.method}"
        steps = variants(problem, [args.method], torchjd=False)
        chosen = {k: steps[k] for k in ("sum", "loop", ours)}
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
        print(f"| {key} | {1e3 * statistics.median(values):.3f} |")
    print()
    first, *others = chosen  # "sum": each step against the plain step of the same round
    for name in others:
        print(f"{name} / {first}: {paired_ratio(samples[name], samples[first]):.3f} (paired)")


if __name__ == "__main__":
    main()
