"""Loss weights over time (a learned balancer's output) and the balancer's own state."""

from __future__ import annotations

from collections.abc import Sequence

from multiloss.report.naming import LossGroup
from multiloss.report.plots._common import (
    Plot,
    PlotOptions,
    draw_series,
    finish_axes,
    grid_figure,
    group_series,
    loss_groups,
    pages,
    run_color,
    series_color,
    set_scale,
    to_png,
)
from multiloss.report.reader import Run

__all__ = ["plot_balancer_state", "plot_weights"]

SECTION = "Weights"


def plot_weights(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Per run, every loss's weight on one axis (a group shows its members' mean and range)."""
    usable = [run for run in runs if run.train.names("weight/")]
    if not usable:
        return []
    groups = loss_groups(usable, options)
    figure, axes_list = grid_figure(len(usable), columns=2, panel_height=3.2, width=11.0)
    for axes, run in zip(axes_list, usable, strict=True):
        drawn = []
        for index, group in enumerate(groups):
            if not any(f"weight/{m}" in run.train for m in group.members):
                continue
            series = group_series(run.train, "weight/", group, absolute=True)
            drawn.append(
                draw_series(
                    axes,
                    series,
                    options,
                    color=series_color(index),
                    label=group.label,
                    band=group.is_group,
                )
            )
        set_scale(axes, drawn, options)
        finish_axes(axes, f"{run.name}: |weight| per loss", legend=True)
    return [
        Plot(
            key="weights",
            section=SECTION,
            title="Loss weights over time",
            png=to_png(figure, options.dpi),
            caption=(
                "The weight each loss was multiplied by (static, scheduled or set by the "
                "balancer), as a magnitude; flat lines mean fixed weights."
            ),
        )
    ]


def plot_balancer_state(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Small multiples of the ``balance/<key>`` values the balancer logged, runs overlaid."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.train.names("balance/") if key not in keys]
    if not keys:
        return []
    plots = []
    size = options.panels_per_figure
    for page, chunk in pages(keys, size):
        figure, axes_list = grid_figure(len(chunk))
        for axes, key in zip(axes_list, chunk, strict=True):
            drawn = []
            for index, run in enumerate(runs):
                series = group_series(run.train, "balance/", LossGroup(key, (key,)))
                label = run.name if len(runs) > 1 else None
                drawn.append(
                    draw_series(axes, series, options, color=run_color(index), label=label)
                )
            set_scale(axes, drawn, options)
            finish_axes(axes, key, legend=len(runs) > 1 and axes is axes_list[0])
        plots.append(
            Plot(
                key=f"balancer-{page}",
                section=SECTION,
                title="Balancer state",
                png=to_png(figure, options.dpi),
                caption="The balancer's internal values (logged under balance/<key>).",
            )
        )
    return plots
