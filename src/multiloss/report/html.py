"""The self-contained HTML page: runs, advisor findings and every plot, embedded as data URIs.

No scripts, no external style sheets, fonts or images: the page opens from disk, offline, and
can be mailed around as one file.
"""

from __future__ import annotations

import base64
import datetime
import struct
from collections.abc import Mapping, Sequence
from html import escape

from multiloss.report.advisor.finding import Finding
from multiloss.report.plots._common import Plot
from multiloss.report.reader import Run

__all__ = ["png_size", "render_page"]

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1180px; padding: 0 16px 48px; background: #fff; }
h1 { font-size: 22px; margin: 20px 0 4px; } h2 { font-size: 18px; margin-top: 32px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; }
nav a { margin-right: 14px; } .muted { color: #666; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd;
        padding: 3px 8px; text-align: left; vertical-align: top; } th { background: #f5f5f5; }
figure { margin: 16px 0 28px; } figure img { max-width: 100%; height: auto;
         border: 1px solid #eee; } figcaption { color: #555; font-size: 13px; }
.finding { border-left: 4px solid #d62728; background: #fdf3f3; margin: 8px 0;
           padding: 6px 10px; } .finding.weak { border-color: #ff7f0e; background: #fff7ec; }
.code { font: 12px monospace; background: #333; color: #fff; padding: 1px 6px;
        border-radius: 3px; } .fix { color: #1f4e79; } .ok { color: #2ca02c; }
.note { color: #8a4b00; }
"""


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header.

    Example:
        >>> header = b"\\x89PNG\\r\\n\\x1a\\n\\x00\\x00\\x00\\rIHDR"
        >>> png_size(header + struct.pack(">II", 3, 2))
        (3, 2)
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError(f"`png` must start with a PNG signature and IHDR chunk; got {png[:16]!r}")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _run_table(runs: Sequence[Run]) -> str:
    rows = []
    for run in runs:
        info = run.info
        status = "still being written" if run.partial else "complete"
        started = info.get("started", info.get("start_time"))
        when = (
            datetime.datetime.fromtimestamp(float(started)).strftime("%Y-%m-%d %H:%M")
            if isinstance(started, int | float)
            else ""
        )
        cells = [
            run.name,
            str(run.path),
            str(run.last_step),
            str(len(run.train)),
            str(len(run.val)),
            str(len(run.losses)),
            str(info.get("model", "")),
            str(info.get("multiloss", "")),
            when,
            status + (f", {run.skipped_lines} bad line(s) skipped" if run.skipped_lines else ""),
        ]
        rows.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>")
    head = ("run", "directory", "last step", "train rows", "val rows", "losses", "model",
            "multiloss", "started", "log")  # fmt: skip
    header = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def _findings(runs: Sequence[Run], findings: Mapping[str, Sequence[Finding]] | None) -> str:
    if findings is None:
        return "<p class='muted'>The advisor was not run.</p>"
    parts = []
    for run in runs:
        found = findings.get(run.name, [])
        title = f"<h3>{escape(run.name)}</h3>" if len(runs) > 1 else ""
        if not found:
            parts.append(f"{title}<p class='ok'>No findings: every rule passed.</p>")
            continue
        items = []
        for finding in found:
            weak = " weak" if finding.weak else ""
            tag = " <span class='muted'>(weak evidence)</span>" if finding.weak else ""
            items.append(
                f"<div class='finding{weak}'><span class='code'>{escape(finding.code)}</span> "
                f"<b>{escape(finding.loss)}</b>: {escape(finding.title)}{tag}<br>"
                f"{escape(finding.message)}<br><span class='fix'>Suggestion: "
                f"{escape(finding.suggestion)}</span></div>"
            )
        parts.append(title + "".join(items))
    return "".join(parts)


def _figure(plot: Plot) -> str:
    width, height = png_size(plot.png)
    data = base64.b64encode(plot.png).decode("ascii")
    notes = "".join(f"<br><span class='note'>{escape(note)}</span>" for note in plot.notes)
    return (
        f"<figure id='{escape(plot.key)}'><img src='data:image/png;base64,{data}' "
        f"width='{width}' height='{height}' alt='{escape(plot.title)}'>"
        f"<figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)}{notes}</figcaption>"
        "</figure>"
    )


def _anchor(section: str) -> str:
    return "s-" + "".join(c if c.isalnum() else "-" for c in section.lower())


def render_page(
    runs: Sequence[Run],
    plots: Sequence[Plot],
    findings: Mapping[str, Sequence[Finding]] | None,
    *,
    problems: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """The whole page as a string.

    Args:
        runs: The runs, in the order given.
        plots: Rendered plots; sections appear in the order of their first plot.
        findings: Run name -> advisor findings (``None`` when the advisor was not run).
        problems: Plots that could not be drawn, shown as notes.
        title: Page title (defaults to the run names).
    """
    names = ", ".join(run.name for run in runs)
    heading = title or f"multiloss report: {names}"
    sections: dict[str, list[Plot]] = {}
    for plot in plots:
        sections.setdefault(plot.section, []).append(plot)
    nav = ["<a href='#s-runs'>Runs</a>", "<a href='#s-advisor'>Advisor</a>"]
    nav += [f"<a href='#{_anchor(name)}'>{escape(name)}</a>" for name in sections]
    body = [
        f"<h1>{escape(heading)}</h1>",
        f"<p class='muted'>Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by multiloss from "
        f"{len(runs)} run(s).</p>",
        f"<nav>{''.join(nav)}</nav>",
        "<h2 id='s-runs'>Runs</h2>",
        _run_table(runs),
        "<h2 id='s-advisor'>Advisor</h2>",
        _findings(runs, findings),
    ]
    if problems:
        body.append("<h2>Problems</h2><ul>")
        body += [f"<li class='note'>{escape(problem)}</li>" for problem in problems]
        body.append("</ul>")
    if not plots:
        body.append("<p class='muted'>Nothing to plot yet: the runs have no logged rows.</p>")
    for section, members in sections.items():
        body.append(f"<h2 id='{_anchor(section)}'>{escape(section)}</h2>")
        body += [_figure(plot) for plot in members]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{escape(heading)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
