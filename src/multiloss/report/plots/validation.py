"""Validation curves: each loss on the validation set, next to its training curve."""

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
    set_scale,
    to_png,
)
from multiloss.report.reader import Run

__all__ = ["plot_validation"]

SECTION = "Validation"


def plot_validation(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Per loss (and the total): validation points and line, training curve faintly behind."""
    usable = [run for run in runs if len(run.val)]
    if not usable:
        return []
    panels = [LossGroup("total", ("total",)), *loss_groups(usable, options, val=True)]
    plots = []
    size = options.panels_per_figure
    for page, chunk in pages(panels, size):
        figure, axes_list = grid_figure(len(chunk))
        for axes, group in zip(axes_list, chunk, strict=True):
            prefix = "" if group.label == "total" else "loss/"
            drawn = []
            for index, run in enumerate(usable):
                color = run_color(index)
                train = group_series(run.train, prefix, group)
                drawn.append(
                    draw_series(
                        axes, train, options, color=color, band=False, linewidth=0.8, alpha=0.4
                    )
                )
                val = group_series(run.val, prefix, group)
                keep = np.isfinite(val.values)
                label = f"val ({run.name})" if len(usable) > 1 else "val"
                axes.plot(
                    val.steps[keep],
                    val.values[keep],
                    color=color,
                    marker="o",
                    markersize=3,
                    linewidth=1.4,
                    label=label,
                )
                drawn.append(val.values[keep])
            set_scale(axes, drawn, options)
            finish_axes(axes, group.label, legend=axes is axes_list[0])
        plots.append(
            Plot(
                key=f"validation-{page}",
                section=SECTION,
                title="Validation losses",
                png=to_png(figure, options.dpi),
                caption=(
                    "Validation values (points) with the training curve faintly behind; a "
                    "widening gap is overfitting of that loss."
                ),
            )
        )
    return plots
