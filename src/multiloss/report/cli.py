"""``multiloss report RUN_DIR [RUN_DIR ...] [--out DIR]``: the command-line face of the report.

``add_report_command(subparsers)`` plugs the command into the ``multiloss`` parser; ``main``
runs it on its own (``python -m multiloss.report.cli``). Matplotlib is imported only when the
command runs, so adding the command costs the ``multiloss`` parser nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multiloss.report.naming import GROUP_MODES

__all__ = ["add_report_command", "build_parser", "main", "run_command"]

_DESCRIPTION = (
    "Write PNG plots and one self-contained HTML page (index.html) for one or more run "
    "directories, and print the loss-health advisor's findings. Several runs are overlaid."
)


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output directory (default: RUN_DIR/report for one run, ./report for several)",
    )
    parser.add_argument(
        "--group",
        choices=GROUP_MODES,
        default="auto",
        help="group module losses by their last name part, e.g. */balance (default: auto)",
    )
    parser.add_argument(
        "--max-points", type=int, default=600, help="most points per line (default: 600)"
    )
    parser.add_argument(
        "--smoothing",
        type=float,
        default=0.02,
        help="EMA window as a fraction of the plotted points (default: 0.02; 0 = none)",
    )
    parser.add_argument("--dpi", type=int, default=96, help="PNG resolution (default: 96)")
    parser.add_argument("--no-advice", action="store_true", help="skip the advisor")
    parser.add_argument(
        "--advice-window", type=int, default=None, help="advisor window in logged rows (50)"
    )
    parser.add_argument("--title", default=None, help="page title")
    parser.set_defaults(handler=run_command)


def add_report_command(subparsers: Any) -> None:
    """Add ``report`` to the ``multiloss`` command's subparsers (``parser.add_subparsers()``).

    The parsed namespace gets ``handler=run_command``; call ``args.handler(args)`` to run it.
    """
    parser = subparsers.add_parser(
        "report",
        help="plots, an HTML report and advice for run directories",
        description=_DESCRIPTION,
    )
    _configure(parser)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser for the report command."""
    parser = argparse.ArgumentParser(prog="multiloss report", description=_DESCRIPTION)
    _configure(parser)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status (0, or 1 when a run cannot be read)."""
    from multiloss.report.advisor import AdvisorConfig
    from multiloss.report.plots import PlotOptions
    from multiloss.report.write import default_out_dir, write_report

    try:
        options = PlotOptions(
            max_points=args.max_points, smoothing=args.smoothing, group=args.group, dpi=args.dpi
        )
        advisor: AdvisorConfig | bool = False
        if not args.no_advice:
            window = {} if args.advice_window is None else {"window": args.advice_window}
            advisor = AdvisorConfig.from_options(**window)
        out = Path(args.out) if args.out else default_out_dir(args.run_dirs)
        page = write_report(args.run_dirs, out, options=options, advisor=advisor, title=args.title)
    except (FileNotFoundError, NotADirectoryError, ValueError, TypeError) as error:
        print(f"multiloss report: error: {_in_flags(str(error))}", file=sys.stderr)
        return 1
    if advisor is not False:
        _print_findings(page)
    print(f"report written to {page}")
    return 0


#: How the library names a parameter in its errors -> the command-line flag that sets it.
_FLAGS = {
    "`max_points` of PlotOptions": "--max-points",
    "`smoothing` of PlotOptions": "--smoothing",
    "`dpi` of PlotOptions": "--dpi",
    "`group` of PlotOptions": "--group",
    "`window` of AdvisorConfig": "--advice-window",
    "`title` of write_report": "--title",
    "`out_dir` of write_report": "--out",
    "each of `run_dirs` of write_report": "RUN_DIR",
}


def _in_flags(message: str) -> str:
    """An error message of the library with its parameter names as the user typed them."""
    for parameter, flag in _FLAGS.items():
        message = message.replace(parameter, f"`{flag}`" if flag.startswith("--") else flag)
    return message


def _print_findings(page: Path) -> None:
    import json

    from multiloss.report.advisor import Finding, format_findings

    found = json.loads((page.parent / "findings.json").read_text(encoding="utf-8"))
    for name, rows in found.items():
        findings = [
            Finding(
                row["finding"], row["loss"], row["message"], row["suggestion"], weak=row["weak"]
            )
            for row in rows
        ]
        print(format_findings(findings, run=name))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``multiloss report ...`` without the ``multiloss`` parser around it."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
