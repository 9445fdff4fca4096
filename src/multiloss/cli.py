"""The ``multiloss`` command: ``multiloss demo`` (and, as they land, ``report``)."""

from __future__ import annotations

import argparse
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
    demo.add_argument("--steps", type=_positive, default=800, help="optimizer steps (default 800)")
    demo.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--batch-size", type=_positive, default=64, help="batch size (default 64)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multiloss`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from multiloss.demo import run_demo

        run_demo(
            steps=args.steps,
            out=args.out,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
