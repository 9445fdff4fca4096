"""This work tree's balancers against a git revision's, per training step, in one process.

A change that saves 1% of a step cannot be seen by running a benchmark before and after it:
the load of a shared machine moves a step by more than that from one minute to the next. This
imports the revision's ``multiloss`` under another name (``multiloss_at_rev``, extracted with
``git archive`` into a temporary directory, its imports rewritten) next to the work tree's, and
times both in the same rounds, shuffled, with plain summation twice (the A/A row: how far it
reads from 1 is the noise). Ratios are medians of per-round ratios (``paired_ratio``).

Problems: ``weighting`` is ``bench_weighting``'s (a 3 x 512 trunk, T linear heads, batch 256,
``apply`` with the representation); ``gradient`` is ``bench_balancing``'s (the same trunk,
with an SGD step), its baseline the loop of ``retain_graph`` backward passes.

    PYTHONPATH=src:. python benchmarks/ab_revision.py --rev HEAD~3 --methods Sum,FAMO \\
        [--problem weighting|gradient] [--tasks 2] [--rounds 300] [--keep-heap]
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import multiloss.balancing as here  # noqa: E402

# The repository root is on the path (above): the benchmarks package imports as a script too.
from benchmarks._timing import (  # noqa: E402
    KEEP_HEAP_HELP,
    interleave_samples,
    keep_heap,
    paired_ratio,
    per_call,
)
from benchmarks.bench_balancing import Problem, variants  # noqa: E402
from benchmarks.bench_weighting import BATCH, WIDTH, Trunk, step_makers  # noqa: E402

ALIAS = "multiloss_at_rev"
_IMPORT = re.compile(r"\bmultiloss(?=[.\s]|$)", re.MULTILINE)

Step = Callable[[], None]


def import_revision(rev: str, into: Path) -> ModuleType:
    """``multiloss.balancing`` as it is at ``rev``, imported as ``multiloss_at_rev``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src/multiloss"],
            check=True,
            capture_output=True,
        ).stdout
    except subprocess.CalledProcessError as error:
        raise SystemExit(
            f"--rev: git archive {rev!r} failed: {error.stderr.decode().strip()}"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / ALIAS
    (into / "src" / "multiloss").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        # Only the package's own imports and dotted references: `from multiloss.x import`,
        # `import multiloss`, `multiloss.x` in code (a docstring's mention changes nothing).
        path.write_text(_IMPORT.sub(ALIAS, text))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{ALIAS}.balancing")


def _make(module: ModuleType, method: str) -> here.Balancer:
    """``method`` from ``module`` (the work tree's balancing package or the revision's), built
    as ``bench_weighting`` builds it: ``Static`` and ``Scheduled`` take per-loss arguments (the
    first loss, ``task0``, of both problems)."""
    if method == "GradNorm(representation)":
        return module.GradNorm(layer="representation")  # type: ignore[no-any-return]
    if method == "Static":
        return module.Static({"task0": 2.0})  # type: ignore[no-any-return]
    if method == "Scheduled":  # the schedule from the same package as the balancer
        package = module.__name__.rpartition(".")[0]
        cosine = importlib.import_module(f"{package}.schedules").Cosine(1000)
        return module.Scheduled({"task0": cosine})  # type: ignore[no-any-return]
    return getattr(module, method)()  # type: ignore[no-any-return]


def weighting_steps(tasks: int, methods: list[str], old: ModuleType) -> dict[str, Step]:
    """Plain summation twice, then each method from the revision and from the work tree."""
    plain, with_balancer = step_makers(
        Trunk(tasks), torch.randn(BATCH, WIDTH), torch.randn(BATCH, tasks)
    )
    return _side_by_side(plain, with_balancer, methods, old)


def gradient_steps(tasks: int, methods: list[str], old: ModuleType) -> dict[str, Step]:
    """The loop twice, then each method from the revision and from the work tree."""
    problem = Problem(tasks)
    loop = variants(problem, [], torchjd=False)["loop"]

    def with_balancer(balancer: here.Balancer) -> Step:
        def step() -> None:
            problem.optimizer.zero_grad(set_to_none=True)
            z, losses = problem.losses()
            balancer.apply(losses, step=0, representation=z)
            balancer.after_optimizer_step()
            problem.optimizer.step()

        return step

    return _side_by_side(loop, with_balancer, methods, old)


def _side_by_side(
    baseline: Step,
    with_balancer: Callable[[here.Balancer], Step],
    methods: list[str],
    old: ModuleType,
) -> dict[str, Step]:
    """The baseline twice (the A/A pair), then each method from the revision and the tree."""
    steps: dict[str, Step] = {"baseline": baseline, "baseline, again (A/A)": baseline}
    for method in methods:
        steps[f"rev {method}"] = with_balancer(_make(old, method))
        steps[f"new {method}"] = with_balancer(_make(here, method))
    return steps


def run(
    rev: str, methods: list[str], problem: str, tasks: int, rounds: int
) -> list[dict[str, object]]:
    """One row per method: the revision's and the work tree's ratio to the baseline, and
    new / rev; the A/A row first."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the parameters of .* receive gradients")
        old = import_revision(rev, Path(folder))
        build = weighting_steps if problem == "weighting" else gradient_steps
        steps = build(tasks, methods, old)
        timers = {name: partial(per_call, step, number=1) for name, step in steps.items()}
        samples = interleave_samples(timers, rounds=rounds, warmup=3)
    base = samples["baseline"]
    again = paired_ratio(samples["baseline, again (A/A)"], base)
    rows: list[dict[str, object]] = [{"case": "baseline, again (A/A)", "ratio": again}]
    for method in methods:
        rows.append(
            {
                "case": method,
                "rev / baseline": paired_ratio(samples[f"rev {method}"], base),
                "new / baseline": paired_ratio(samples[f"new {method}"], base),
                "new / rev": paired_ratio(samples[f"new {method}"], samples[f"rev {method}"]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="a git revision (HEAD~3, a commit, a tag)")
    parser.add_argument(
        "--methods",
        default="Sum,Normalize,Uncertainty,FAMO",
        help="comma-separated balancer names (GradNorm(representation) for that variant)",
    )
    parser.add_argument("--problem", choices=("weighting", "gradient"), default="weighting")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-heap", action="store_true", help=KEEP_HEAP_HELP)
    args = parser.parse_args()
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [m for m in methods if m != "GradNorm(representation)" and not hasattr(here, m)]
    if unknown:
        parser.error(f"--methods: no balancer named {unknown} in multiloss.balancing")
    if args.keep_heap and not keep_heap():
        print("--keep-heap: not glibc, ignored")
    torch.set_num_threads(args.threads)
    rows = run(args.rev, methods, args.problem, args.tasks, args.rounds)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.problem}, "
        f"T = {args.tasks}, {args.rounds} rounds; rev = {args.rev}\n"
    )
    print("| case | rev / baseline | new / baseline | new / rev |")
    print("|---|---|---|---|")
    for row in rows:
        if "ratio" in row:
            print(f"| {row['case']} | | {row['ratio']:.4f} | |")
            continue
        print(
            f"| {row['case']} | {row['rev / baseline']:.4f} | {row['new / baseline']:.4f} | "
            f"{row['new / rev']:.4f} |"
        )


if __name__ == "__main__":
    main()
