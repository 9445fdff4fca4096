"""Run report (issue 7): time and size of ``write_report`` on a long run with many losses.

A fabricated run of 10,000 logged steps with 10 losses (8 task/auxiliary losses and 2 MoE
layers' balance losses, with per-expert load), full gradient diagnostics (45 cosine pairs) and
a validation row every 500 steps. Measured: reading the log, the advisor, and the whole report
(plots + page), with the default downsampling and, for comparison, at full resolution (every
logged point drawn). Variants alternate round by round; medians are reported.

Targets: the report in under 10 s, the page under 5 MB. Wall-clock seconds on a shared machine
include other processes' turns; the CPU seconds of this process are reported next to them.

    python benchmarks/bench_report.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from multiloss.report import PlotOptions, advise, read_run, write_report  # noqa: E402
from multiloss.report.synthetic import SyntheticLoss, fabricate_run  # noqa: E402

__all__ = ["run"]

_LOSSES = [
    SyntheticLoss("cls", start=2.3, end=0.1),
    SyntheticLoss("depth", start=1.0, end=0.2, weight=0.5),
    SyntheticLoss("normals", start=0.8, end=0.3, weight=0.5, grad_scale=0.7),
    SyntheticLoss("encoder/sparsity", start=0.3, end=0.05, weight=0.05, grad_scale=2.0),
    SyntheticLoss("decoder/recon", start=0.5, end=0.1, weight=1.0),
    SyntheticLoss("head/contrast", start=2.0, end=1.2, weight=0.1, grad_scale=3.0),
    SyntheticLoss("head/kl", start=0.1, end=0.02, weight=1e-3, grad_scale=5.0),
    SyntheticLoss("adversary", start=0.7, end=0.7, weight=-0.1, opposed_to="depth"),
]


def _median_seconds(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(quick: bool = False) -> list[dict[str, object]]:
    """Rows: one per variant, with seconds (median), page size and the log's size."""
    steps = 2_000 if quick else 10_000
    rounds = 2 if quick else 5
    root = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        folder = fabricate_run(
            root / "run", _LOSSES, steps=steps, val_every=500, moe_layers=2, experts=16
        )
        log_mb = os.path.getsize(folder / "metrics.jsonl") / 1e6
        variants = {
            "default (downsampled)": PlotOptions(),
            "full resolution": PlotOptions(max_points=steps, smoothing=0.0),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        sizes: dict[str, float] = {}
        # Interleave the variants round by round: the machine is shared and noisy.
        for index in range(rounds):
            order = list(variants) if index % 2 == 0 else list(variants)[::-1]
            for name in order:
                out = root / name.split()[0]
                shutil.rmtree(out, ignore_errors=True)
                start, start_cpu = time.perf_counter(), time.process_time()
                page = write_report(folder, out, options=variants[name])
                times[name].append(time.perf_counter() - start)
                # CPU seconds of this process: what the report costs on an idle machine (wall
                # time on a shared machine also counts the other processes' turns).
                cpu[name].append(time.process_time() - start_cpu)
                sizes[name] = os.path.getsize(page) / 1e6
        read_s = statistics.median(_median_seconds(lambda: read_run(folder), rounds))
        advise_s = statistics.median(_median_seconds(lambda: advise(folder), rounds))
        default = statistics.median(times["default (downsampled)"])
        rows: list[dict[str, object]] = []
        for name in variants:
            seconds = statistics.median(times[name])
            rows.append(
                {
                    "case": f"report, {steps} steps x 10 losses: {name}",
                    "log MB": round(log_mb, 1),
                    "read s": round(read_s, 2),
                    "advise s": round(advise_s, 2),
                    "report s": round(seconds, 2),
                    "report cpu s": round(statistics.median(cpu[name]), 2),
                    "vs default": round(seconds / default, 2),
                    "page MB": round(sizes[name], 2),
                    "target": "< 10 s, < 5 MB" if name.startswith("default") else "",
                }
            )
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 steps, 2 rounds")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    for row in run(quick=args.quick):
        print("  ".join(f"{key}: {value}" for key, value in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
