"""Run every benchmark and write one table: ``python benchmarks/run.py [--quick] [--only NAME]``.

Each ``benchmarks/bench_*.py`` exposes ``run(quick: bool) -> list[dict]``; rows carry at least
``case`` and usually ``baseline ms``, ``ours ms``, ``ratio`` and ``target``. The table is
printed and written to ``bench-results/<date>.md`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _table(name: str, rows: list[dict]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(key, "")) for key in columns) + " |" for row in rows]
    return "\n".join([f"### {name}", "", header, rule, *body, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sizes")
    parser.add_argument(
        "--only", action="append", default=[], help="run only bench_<NAME>.py (repeatable)"
    )
    args = parser.parse_args()
    import torch

    names = sorted(p.stem[len("bench_") :] for p in (ROOT / "benchmarks").glob("bench_*.py"))
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"--only {unknown}: no such benchmark; choose from {names}")
        names = [name for name in names if name in args.only]
    lines = [
        f"# multiloss benchmarks, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}{', quick' if args.quick else ''}",
        "",
    ]
    print("\n".join(lines))
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        rows = module.run(quick=args.quick)
        table = _table(f"{name} ({time.perf_counter() - started:.0f} s)", rows)
        print(table, flush=True)
        lines.append(table)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text("\n".join(lines))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
