"""Mixture-of-experts layers: expert load over time as a heatmap per layer, and balance stats."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from multiloss.report.downsample import bucket_matrix
from multiloss.report.experts import MOE_KEYS, load_matrix, moe_layers
from multiloss.report.naming import LossGroup
from multiloss.report.plots._common import (
    Plot,
    PlotOptions,
    cell_edges,
    draw_series,
    finish_axes,
    grid_figure,
    group_series,
    new_figure,
    pages,
    run_color,
    set_scale,
    to_png,
)
from multiloss.report.reader import Run

__all__ = ["plot_moe_load", "plot_moe_stats"]

SECTION = "Mixture of experts"
_LAYERS_PER_FIGURE = 8
_MAX_COLUMNS = 300  # time buckets per heatmap: more than enough for a 5-inch-wide panel


def plot_moe_load(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Per run, one heatmap per MoE layer: experts x steps, load relative to the mean."""
    plots = []
    for run_index, run in enumerate(runs):
        layers = list(moe_layers(run.train).items())
        for page, chunk in pages(layers, _LAYERS_PER_FIGURE):
            columns = 2 if len(chunk) > 1 else 1
            rows = math.ceil(len(chunk) / columns)
            tallest = max(len(experts) for _, experts in chunk)
            height = rows * (0.9 + 0.12 * min(tallest, 32)) + 0.6
            figure = new_figure(11.0, height)
            axes_grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
            for extra in axes_grid[len(chunk) :]:
                extra.remove()
            image = None
            for axes, (layer, experts) in zip(axes_grid, chunk, strict=False):
                relative = load_matrix(run.train, layer, experts)
                steps, means = bucket_matrix(run.train.steps, relative, _MAX_COLUMNS)
                image = axes.pcolormesh(
                    cell_edges(steps),
                    cell_edges(np.arange(len(experts))),
                    means.T,
                    cmap="viridis",
                    vmin=0.0,
                    vmax=2.0,
                )
                axes.set_ylabel("expert", fontsize=8)
                finish_axes(axes, layer)
            if image is not None:
                figure.colorbar(
                    image, ax=list(axes_grid[: len(chunk)]), label="load / mean (1 = even)"
                )
            plots.append(
                Plot(
                    key=f"moe-load-{run_index + 1}-{page}",
                    section=SECTION,
                    title=f"Expert load per layer: {run.name}",
                    png=to_png(figure, options.dpi),
                    caption=(
                        "Each row is an expert, each column a stretch of steps; color is the "
                        "expert's share of tokens relative to an even split (dark: starved or "
                        "dead, bright: overloaded)."
                    ),
                )
            )
    return plots


def plot_moe_stats(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """One panel per balance statistic (cv, max_vio, ...): each layer (one run) or the layer
    mean with its range (several runs)."""
    keys = []
    for key in MOE_KEYS:
        if any(
            f"metric/{layer}/{key}" in run.train for run in runs for layer in moe_layers(run.train)
        ):
            keys.append(key)
    if not keys:
        return []
    figure, axes_list = grid_figure(len(keys))
    for axes, key in zip(axes_list, keys, strict=True):
        drawn = []
        for run_index, run in enumerate(runs):
            layers = [
                layer for layer in moe_layers(run.train) if f"metric/{layer}/{key}" in run.train
            ]
            if not layers:
                continue
            if len(runs) == 1:
                shades = colormaps["viridis"](np.linspace(0.0, 0.9, len(layers)))
                for layer, shade in zip(layers, shades, strict=True):
                    group = LossGroup(layer, (f"{layer}/{key}",))
                    series = group_series(run.train, "metric/", group)
                    label = layer if len(layers) <= 6 else None
                    drawn.append(
                        draw_series(axes, series, options, color=shade, label=label, band=False)
                    )
            else:
                group = LossGroup(key, tuple(f"{layer}/{key}" for layer in layers))
                series = group_series(run.train, "metric/", group)
                drawn.append(
                    draw_series(axes, series, options, color=run_color(run_index), label=run.name)
                )
        set_scale(axes, drawn, options)
        finish_axes(axes, key, legend=axes is axes_list[0])
    return [
        Plot(
            key="moe-stats",
            section=SECTION,
            title="Load-balance statistics",
            png=to_png(figure, options.dpi),
            caption=(
                "Per-layer routing statistics (one line per layer, darker = earlier layer; with "
                "several runs, the mean over layers with its range). cv: coefficient of "
                "variation of the load; max_vio: worst overload relative to even; "
                "dead_fraction: experts with no tokens."
            ),
        )
    ]
