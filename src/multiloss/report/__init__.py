"""See every loss: plots, a self-contained HTML run report, and a loss-health advisor.

Everything is read back from a run directory (``metrics.jsonl`` and ``run.json``), so a report
can be made during training, after it, or for several runs side by side::

    import multiloss.report as mr
    page = mr.write_report(["runs/base", "runs/balanced"], "compare")   # -> compare/index.html
    for finding in mr.advise("runs/base"):
        print(finding)

The advisor also runs live: ``Trainer(..., hooks=[mr.AdvisorHook()])``.
"""

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
