"""Make the report: read the runs, advise, draw every plot family, write PNGs and the page."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from multiloss._validation import check_path, describe
from multiloss.report.advisor import AdvisorConfig, Finding, advise
from multiloss.report.html import render_page
from multiloss.report.plots import PLOT_FAMILIES, Plot, PlotOptions
from multiloss.report.reader import Run, read_runs

__all__ = ["PAGE_FILE", "default_out_dir", "write_report"]

PAGE_FILE = "index.html"
PLOTS_DIR = "plots"


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """``<run>/report`` for one run; ``./report`` for a comparison of several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    return Path("report")


def _draw(
    runs: Sequence[Run],
    options: PlotOptions,
    families: Sequence[Callable[[Sequence[Run], PlotOptions], list[Plot]]],
) -> tuple[list[Plot], list[str]]:
    plots: list[Plot] = []
    problems: list[str] = []
    for family in families:
        try:
            plots += family(runs, options)
        except Exception as error:
            message = f"{family.__name__} failed: {type(error).__name__}: {error}"
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            problems.append(message)
    return plots, problems


def write_report(
    run_dirs: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    options: PlotOptions | None = None,
    advisor: AdvisorConfig | bool = True,
    title: str | None = None,
) -> Path:
    """Write PNG plots and one self-contained HTML page for one or several runs.

    Several runs are overlaid for comparison (one color per run). A run still being written is
    fine: its half-written last line is ignored.

    Args:
        run_dirs: One run directory or several.
        out_dir: Where to write (created); defaults to ``<run>/report`` for one run and
            ``./report`` for several.
        options: How to draw (``PlotOptions``).
        advisor: ``True`` runs the advisor with default thresholds, an ``AdvisorConfig`` with
            those, ``False`` skips it.
        title: Page title.

    Returns:
        The path of the HTML page (``<out_dir>/index.html``).

    Example:
        >>> import tempfile
        >>> from multiloss.report.synthetic import SyntheticLoss, fabricate_run
        >>> run = fabricate_run(tempfile.mkdtemp(), [SyntheticLoss("task")], steps=50)
        >>> page = write_report(run, options=PlotOptions(dpi=40))
        >>> page.name, (page.parent / "findings.json").is_file()
        ('index.html', True)
    """
    if options is not None and not isinstance(options, PlotOptions):
        raise TypeError(
            f"`options` of write_report must be a PlotOptions or None; got {describe(options)}"
        )
    if not isinstance(advisor, bool | AdvisorConfig):
        raise TypeError(
            "`advisor` of write_report must be True, False or an AdvisorConfig; got "
            f"{describe(advisor)}"
        )
    if title is not None and not isinstance(title, str):
        raise TypeError(f"`title` of write_report must be a str or None; got {describe(title)}")
    paths: Sequence[str | Path] = (
        [run_dirs] if isinstance(run_dirs, str | os.PathLike) else run_dirs
    )
    runs = read_runs(paths, "`run_dirs` of write_report")
    target = (
        check_path(out_dir, "`out_dir` of write_report")
        if out_dir is not None
        else default_out_dir(paths)
    )
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(
            f"`out_dir` of write_report must be a directory (created if missing); got "
            f"{str(target)!r}, which is a file"
        )
    plot_options = options or PlotOptions()
    findings: dict[str, list[Finding]] | None = None
    if advisor is not False:
        config = advisor if isinstance(advisor, AdvisorConfig) else AdvisorConfig()
        findings = {run.name: advise(run, config) for run in runs}
    plots, problems = _draw(runs, plot_options, PLOT_FAMILIES)
    (target / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    for plot in plots:
        (target / PLOTS_DIR / f"{plot.key}.png").write_bytes(plot.png)
    if findings is not None:
        serial = {
            name: [
                {
                    "finding": f.code,
                    "loss": f.loss,
                    "message": f.message,
                    "suggestion": f.suggestion,
                    "evidence": dict(f.evidence),
                    "step": f.step,
                    "weak": f.weak,
                }
                for f in found
            ]
            for name, found in findings.items()
        }
        (target / "findings.json").write_text(json.dumps(serial, indent=2), encoding="utf-8")
    page = target / PAGE_FILE
    html = render_page(runs, plots, findings, problems=problems, title=title)
    page.write_text(html, encoding="utf-8")
    return page
