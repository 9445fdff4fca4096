"""Shared plotting machinery: figures without pyplot, series, scales and colors.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, so
making a report never touches pyplot's global state (nor the user's interactive backend).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from multiloss.report.downsample import bucket, smooth, smoothing_window
from multiloss.report.naming import LossGroup, group_losses
from multiloss.report.plots._base import Plot, PlotOptions, Series
from multiloss.report.reader import Run
from multiloss.report.table import Table

__all__ = [
    "pages",
    "Plot",
    "PlotOptions",
    "Series",
    "cell_edges",
    "draw_series",
    "finish_axes",
    "grid_figure",
    "group_series",
    "loss_groups",
    "new_figure",
    "present",
    "run_color",
    "series_color",
    "set_scale",
    "to_png",
    "wants_log",
]

FloatArray = NDArray[np.float64]

_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
)  # fmt: skip


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A figure with its own Agg canvas (no pyplot).

    ``constrained`` layout places colorbars and long labels well but costs about half the
    rendering time; the small-multiple grids use fixed margins instead.
    """
    figure = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


_Item = TypeVar("_Item")


def pages(items: Sequence[_Item], size: int) -> Iterator[tuple[int, Sequence[_Item]]]:
    """Small multiples split into figures of ``size`` panels: ``(page, items)``, pages from 1.

    Example:
        >>> [(page, list(chunk)) for page, chunk in pages("abcde", 2)]
        [(1, ['a', 'b']), (2, ['c', 'd']), (3, ['e'])]
    """
    for page, start in enumerate(range(0, len(items), size), start=1):
        yield page, items[start : start + size]


def grid_figure(
    panels: int, *, columns: int = 3, panel_height: float = 2.4, width: float | None = None
) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` small-multiple axes in rows of ``columns``; extras removed.

    The page is 11 inches wide; a lone small panel gets 6.5 unless ``width`` says otherwise.
    """
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    width = width if width is not None else (11.0 if columns > 1 else 6.5)
    height = panel_height * rows + 0.2
    figure = new_figure(width, height, constrained=False)
    # Fixed margins in inches: room for tick labels on the left, a title above each panel and
    # the step label below it.
    gap = 0.75
    figure.subplots_adjust(
        left=0.65 / width,
        right=1 - 0.2 / width,
        bottom=0.45 / height,
        top=1 - 0.3 / height,
        wspace=0.3,
        hspace=gap / max(panel_height - gap, 0.5),
    )
    axes = list(np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel())
    for extra in axes[panels:]:
        extra.remove()
    return figure, axes[:panels]


def to_png(figure: Figure, dpi: int) -> bytes:
    """Render ``figure`` to PNG bytes."""
    buffer = io.BytesIO()
    # A lower zlib level than the default saves about a third of the encoding time for ~10%
    # larger files: the report is dominated by drawing, and pages stay far below their budget.
    figure.savefig(
        buffer, format="png", dpi=dpi, facecolor="white", pil_kwargs={"compress_level": 4}
    )
    return buffer.getvalue()


def run_color(index: int) -> str:
    """Color of the ``index``-th run when several runs overlay."""
    return _PALETTE[index % len(_PALETTE)]


def series_color(index: int) -> str:
    """Color of the ``index``-th loss within one run."""
    return _PALETTE[index % len(_PALETTE)]


def loss_groups(runs: Sequence[Run], options: PlotOptions, *, val: bool = False) -> list[LossGroup]:
    """Loss groups over the union of the runs' losses (first-appearance order)."""
    names: list[str] = []
    seen: set[str] = set()
    for run in runs:
        table_names = run.val.names("loss/") if val else run.losses
        for name in table_names:
            if name not in seen:
                seen.add(name)
                names.append(name)
    return group_losses(names, options.group, max_series=options.max_series)


def group_series(
    table: Table, prefix: str, group: LossGroup, *, absolute: bool = False, total: bool = False
) -> Series:
    """The series of ``prefix + member`` for one loss; for a group, the member mean with a
    min-max band, or the members' sum when ``total`` (a group's contribution to the loss)."""
    columns = [table.column(prefix + member) for member in group.members]
    stacked = np.abs(np.stack(columns)) if absolute else np.stack(columns)
    steps = table.steps.astype(np.float64)
    if len(columns) == 1:
        return Series(steps, stacked[0])
    present = np.isfinite(stacked).any(axis=0)
    steps, stacked = steps[present], stacked[:, present]
    if total:
        return Series(steps, np.nansum(stacked, axis=0))
    return Series(
        steps, np.nanmean(stacked, axis=0), np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    )


def present(run: Run, groups: Sequence[LossGroup]) -> list[tuple[int, LossGroup]]:
    """The groups (with their index, which fixes their color) that ``run`` logged a loss of."""
    return [
        (index, group)
        for index, group in enumerate(groups)
        if any(f"loss/{member}" in run.train for member in group.members)
    ]


def cell_edges(centers: NDArray[np.generic]) -> FloatArray:
    """Edges of heatmap cells around ``centers`` (midpoints; the ends mirror the next gap).

    Example:
        >>> cell_edges(np.array([0.0, 2.0, 3.0])).tolist()
        [-1.0, 1.0, 2.5, 3.5]
    """
    values = np.asarray(centers, dtype=np.float64)
    if values.size == 1:
        return np.array([values[0] - 0.5, values[0] + 0.5])
    middle = (values[1:] + values[:-1]) / 2.0
    return np.concatenate(
        [[values[0] - (middle[0] - values[0])], middle, [values[-1] + (values[-1] - middle[-1])]]
    )


def draw_series(
    axes: Axes,
    series: Series,
    options: PlotOptions,
    *,
    color: str,
    label: str | None = None,
    linestyle: str = "-",
    band: bool = True,
    linewidth: float = 1.4,
    alpha: float = 1.0,
) -> FloatArray:
    """Draw a smoothed, downsampled line with a faint band; returns every value drawn."""
    buckets = bucket(series.steps, series.values, options.max_points)
    if buckets.mean.size == 0:
        return buckets.mean
    window = smoothing_window(buckets.mean.size, options.smoothing)
    line = smooth(buckets.mean, window)
    drawn = [line]
    if band:
        low, high = buckets.low, buckets.high
        if series.low is not None and series.high is not None:
            # A group's band is the spread over its members, not over time.
            low = bucket(series.steps, series.low, options.max_points).low
            high = bucket(series.steps, series.high, options.max_points).high
        if np.any(low != high):
            axes.fill_between(buckets.x, low, high, color=color, alpha=0.15, linewidth=0)
            drawn += [low, high]
        elif window > 1:
            # Too few points to bucket: show the raw values faintly behind the smoothed line.
            axes.plot(buckets.x, buckets.mean, color=color, alpha=0.25, linewidth=0.8)
            drawn.append(buckets.mean)
    axes.plot(
        buckets.x,
        line,
        color=color,
        linestyle=linestyle,
        linewidth=linewidth,
        label=label,
        alpha=alpha,
    )
    return np.concatenate(drawn)


def wants_log(values: Iterable[FloatArray], decades: float) -> bool:
    """Whether the drawn values are all positive and span at least ``decades`` decades."""
    finite = [v[np.isfinite(v)] for v in values]
    joined = np.concatenate(finite) if finite else np.empty(0)
    if joined.size < 2 or np.any(joined <= 0):
        return False
    return bool(np.log10(joined.max() / joined.min()) >= decades)


def set_scale(axes: Axes, values: Iterable[FloatArray], options: PlotOptions) -> None:
    """Use a log y axis when the values span decades."""
    if wants_log(values, options.log_decades):
        axes.set_yscale("log")


def finish_axes(axes: Axes, title: str, *, xlabel: str = "step", legend: bool = False) -> None:
    """Title, grid and labels in the report's style."""
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3, linewidth=0.5)
    axes.tick_params(labelsize=8)
    axes.set_xlabel(xlabel, fontsize=8)
    if legend and axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best", frameon=False)
