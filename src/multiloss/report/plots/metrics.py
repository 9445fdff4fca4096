"""Training overview (total loss, learning rate, step time) and every recorded metric."""

from __future__ import annotations

from collections.abc import Sequence

from multiloss.report.experts import is_moe_metric, moe_layers
from multiloss.report.naming import LossGroup, group_losses
from multiloss.report.plots._common import (
    Plot,
    PlotOptions,
    draw_series,
    finish_axes,
    grid_figure,
    group_series,
    pages,
    run_color,
    set_scale,
    to_png,
)
from multiloss.report.reader import Run

__all__ = ["plot_metrics", "plot_overview"]

_OVERVIEW = (("total", "total loss"), ("lr", "learning rate"), ("time/step", "seconds per step"))


def _panels(
    runs: Sequence[Run],
    panels: Sequence[tuple[str, LossGroup, str]],
    options: PlotOptions,
    *,
    key: str,
    section: str,
    title: str,
    caption: str,
) -> list[Plot]:
    """Small multiples of (prefix, group, title) panels, runs overlaid."""
    plots = []
    size = options.panels_per_figure
    for page, chunk in pages(panels, size):
        figure, axes_list = grid_figure(len(chunk))
        for axes, (prefix, group, panel_title) in zip(axes_list, chunk, strict=True):
            drawn = []
            for index, run in enumerate(runs):
                series = group_series(run.train, prefix, group)
                label = run.name if len(runs) > 1 else None
                drawn.append(
                    draw_series(axes, series, options, color=run_color(index), label=label)
                )
            set_scale(axes, drawn, options)
            finish_axes(axes, panel_title, legend=len(runs) > 1 and axes is axes_list[0])
        plots.append(
            Plot(
                key=f"{key}-{page}",
                section=section,
                title=title,
                png=to_png(figure, options.dpi),
                caption=caption,
            )
        )
    return plots


def plot_overview(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Total loss, learning rate and seconds per step, runs overlaid."""
    panels = [
        ("", LossGroup(column, (column,)), label)
        for column, label in _OVERVIEW
        if any(column in run.train for run in runs)
    ]
    if not panels:
        return []
    return _panels(
        runs,
        panels,
        options,
        key="overview",
        section="Overview",
        title="Training at a glance",
        caption="The weighted total the optimizer minimized, the learning rate, and step time.",
    )


def plot_metrics(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Every ``metric/<name>`` that is not an MoE layer's own statistic, grouped by last part."""
    names: list[str] = []
    for run in runs:
        layers = moe_layers(run.train)
        names += [
            name
            for name in run.train.names("metric/")
            if name not in names and not is_moe_metric(name, layers)
        ]
    if not names:
        return []
    groups = group_losses(names, options.group, max_series=options.max_series)
    panels = [
        (
            "metric/",
            group,
            group.label + (f" ({len(group.members)}: mean, min..max)" if group.is_group else ""),
        )
        for group in groups
    ]
    return _panels(
        runs,
        panels,
        options,
        key="metrics",
        section="Metrics",
        title="Recorded metrics",
        caption="Scalars recorded with multiloss.record() and auxiliary layers' diagnostics.",
    )
