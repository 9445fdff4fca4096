"""The ``multiloss`` command: ``multiloss demo`` and ``multiloss report``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multiloss", description="Train PyTorch models with many named losses."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="train the digits demo (bundled data, no network) and report every loss",
        description=(
            "Train a small classifier on scikit-learn's bundled handwritten digits with a "
            "classification loss plus two auxiliary losses emitted from inside the model "
            "(activation sparsity, input reconstruction). Shows a live progress bar, prints a "
            "per-loss table and the test accuracy, and leaves a run directory with "
            "metrics.jsonl, TensorBoard events and checkpoints."
        ),
    )
    demo.add_argument(
        "--steps", type=_positive, default=None, help="optimizer steps (default 800; --moe: 300)"
    )
    demo.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--batch-size", type=_positive, default=64, help="batch size (default 64)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.add_argument(
        "--moe",
        action="store_true",
        help=(
            "the digits model with a Mixture-of-Experts layer (8 experts, top-2), trained "
            "without balancing, with the switch loss and with aux-loss-free bias balancing; "
            "prints per-expert load and the balance metrics side by side (300 steps per run "
            "unless --steps is given)"
        ),
    )
    demo.add_argument(
        "--nproc",
        type=_positive,
        default=1,
        help=(
            "train with this many processes on this machine (torchrun + DistributedDataParallel,"
            " gloo on CPU, NCCL on GPUs); each process sees its own shard of every epoch"
        ),
    )
    from multiloss.report.cli import add_report_command

    add_report_command(commands)
    return parser


def _relaunch_with_torchrun(argv: Sequence[str], nproc: int) -> int:
    """Run this same command under torchrun with ``nproc`` local processes."""
    forwarded = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        forwarded.append(item)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "multiloss.cli",
        *forwarded,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // nproc, 1)))
    return subprocess.call(command, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multiloss`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "report":
        return int(args.handler(args))
    if args.command == "demo":
        if args.moe and args.nproc > 1:
            raise SystemExit("multiloss demo: --moe runs in one process; drop --nproc")
        if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
            return _relaunch_with_torchrun(argv, args.nproc)
        if args.moe:
            from multiloss.demo.moe import run_moe_demo

            run_moe_demo(steps=args.steps or 300, seed=args.seed, progress=not args.no_progress)
            return 0
        from multiloss.demo import run_demo

        run_demo(
            steps=args.steps or 800,
            out=args.out,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
