"""Loss curves: each loss raw and weighted (small multiples), and all weighted losses together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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

__all__ = ["group_title", "plot_losses", "plot_weighted_overview"]

SECTION = "Losses"


def group_title(group: LossGroup, runs: Sequence[Run]) -> str:
    """Panel title: the loss (or ``*/term`` with its member count), marked when maximized."""
    title = group.label
    if group.is_group:
        title += f" ({len(group.members)} losses: mean, band = min..max)"
    maximized = any(
        np.nanmin(run.train.column(f"weight/{member}"), initial=0.0) < 0
        for run in runs
        for member in group.members
        if f"weight/{member}" in run.train
    )
    return title + " [maximized]" if maximized else title


def plot_losses(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """One panel per loss (or group): raw value solid, weighted value dashed, runs overlaid."""
    groups = [g for g in loss_groups(runs, options) if any(_has(run, g) for run in runs)]
    plots = []
    size = options.panels_per_figure
    for page, chunk in pages(groups, size):
        figure, axes_list = grid_figure(len(chunk))
        for axes, group in zip(axes_list, chunk, strict=True):
            drawn = []
            for index, run in enumerate(runs):
                color = run_color(index)
                suffix = f" ({run.name})" if len(runs) > 1 else ""
                raw = group_series(run.train, "loss/", group)
                drawn.append(draw_series(axes, raw, options, color=color, label="raw" + suffix))
                weighted = group_series(run.train, "weighted/", group, absolute=True)
                drawn.append(
                    draw_series(
                        axes,
                        weighted,
                        options,
                        color=color,
                        label="|weighted|" + suffix,
                        linestyle="--",
                        band=False,
                    )
                )
            set_scale(axes, drawn, options)
            finish_axes(axes, group_title(group, runs), legend=axes is axes_list[0])
        plots.append(
            Plot(
                key=f"losses-{page}",
                section=SECTION,
                title="Each loss: raw (solid) and weighted (dashed)",
                png=to_png(figure, options.dpi),
                caption=(
                    "Smoothed lines over a faint band of the unsmoothed range. A log axis is "
                    "used where a panel's values span decades. Weighted values are shown as "
                    "magnitudes (a maximized loss has a negative weight)."
                ),
            )
        )
    return plots


def _has(run: Run, group: LossGroup) -> bool:
    return any(f"loss/{member}" in run.train for member in group.members)


def plot_weighted_overview(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Per run, every weighted loss on one axis: how big each term is next to the others."""
    usable = [run for run in runs if len(run.train) and run.losses]
    if not usable:
        return []
    groups = loss_groups(usable, options)
    figure, axes_list = grid_figure(len(usable), columns=2, panel_height=3.4, width=11.0)
    for axes, run in zip(axes_list, usable, strict=True):
        drawn = []
        for index, group in enumerate(groups):
            if not _has(run, group):
                continue
            series = group_series(run.train, "weighted/", group, absolute=True, total=True)
            label = (
                f"{group.label} (sum of {len(group.members)})" if group.is_group else group.label
            )
            drawn.append(
                draw_series(
                    axes, series, options, color=series_color(index), label=label, band=False
                )
            )
        if "total" in run.train:
            total = group_series(run.train, "", LossGroup("total", ("total",)), absolute=True)
            drawn.append(
                draw_series(axes, total, options, color="black", label="|total|", band=False)
            )
        set_scale(axes, drawn, options)
        finish_axes(axes, f"{run.name}: weighted losses", legend=True)
    return [
        Plot(
            key="weighted-overview",
            section=SECTION,
            title="Weighted losses side by side",
            png=to_png(figure, options.dpi),
            caption=(
                "Each term's contribution to the total (|weight x loss|), one panel per run: the "
                "scale at which the losses compete. A group shows the sum over its members."
            ),
        )
    ]
