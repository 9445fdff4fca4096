"""See every loss: plots, a self-contained HTML run report, and a loss-health advisor.

Everything is read back from a run directory (``metrics.jsonl`` and ``run.json``), so a report
can be made during training, after it, or for several runs side by side::

    import multiloss.report as mr
    page = mr.write_report(["runs/base", "runs/balanced"], "compare")   # -> compare/index.html
    for finding in mr.advise("runs/base"):
        print(finding)

The advisor also runs live: ``Trainer(..., hooks=[mr.AdvisorHook()])``.

Names are imported on first use, so ``import multiloss.report`` (and the ``multiloss`` command
that registers ``report``) does not load matplotlib until a plot is drawn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiloss.report.advisor import (
        FINDINGS,
        AdvisorConfig,
        AdvisorHook,
        Finding,
        advise,
        format_findings,
    )
    from multiloss.report.plots import PlotOptions
    from multiloss.report.reader import Run, read_run, read_runs
    from multiloss.report.table import Table
    from multiloss.report.write import write_report

__all__ = [
    "FINDINGS",
    "AdvisorConfig",
    "AdvisorHook",
    "Finding",
    "PlotOptions",
    "Run",
    "Table",
    "advise",
    "format_findings",
    "read_run",
    "read_runs",
    "write_report",
]

_HOME = {
    "FINDINGS": "multiloss.report.advisor",
    "AdvisorConfig": "multiloss.report.advisor",
    "AdvisorHook": "multiloss.report.advisor",
    "Finding": "multiloss.report.advisor",
    "advise": "multiloss.report.advisor",
    "format_findings": "multiloss.report.advisor",
    "PlotOptions": "multiloss.report.plots",
    "Run": "multiloss.report.reader",
    "read_run": "multiloss.report.reader",
    "read_runs": "multiloss.report.reader",
    "Table": "multiloss.report.table",
    "write_report": "multiloss.report.write",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'multiloss.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
