"""Pairwise gradient conflict: cosine between the losses' gradients, as matrices over time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from numpy.typing import NDArray

from multiloss.report.downsample import bucket_matrix
from multiloss.report.naming import LossGroup, split_pair
from multiloss.report.plots._common import (
    Plot,
    PlotOptions,
    cell_edges,
    finish_axes,
    loss_groups,
    new_figure,
    present,
    to_png,
)
from multiloss.report.reader import Run
from multiloss.report.table import Table

__all__ = ["cosine_pairs", "group_cosines", "plot_conflicts"]

SECTION = "Gradient conflict"
_QUARTERS = 4
_MAX_PAIR_ROWS = 40
_MAX_MATRIX = 16  # more losses than this make unreadable matrices: show pairs only


def cosine_pairs(table: Table, names: Sequence[str]) -> dict[tuple[str, str], NDArray[np.float64]]:
    """Every logged ``grad/cos/<a>|<b>`` column keyed by its (a, b) pair."""
    return {
        split_pair(pair, names): table.column(f"grad/cos/{pair}")
        for pair in table.names("grad/cos/")
    }


def group_cosines(
    table: Table, names: Sequence[str], groups: Sequence[LossGroup]
) -> dict[tuple[int, int], NDArray[np.float64]]:
    """Cosine per pair of groups (i <= j, index into ``groups``), the mean over member pairs."""
    where = {member: i for i, group in enumerate(groups) for member in group.members}
    collected: dict[tuple[int, int], list[NDArray[np.float64]]] = {}
    for (a, b), values in cosine_pairs(table, names).items():
        if a not in where or b not in where:
            continue
        key = (min(where[a], where[b]), max(where[a], where[b]))
        collected.setdefault(key, []).append(values)
    result = {}
    for key, columns in collected.items():
        stacked = np.stack(columns)
        present = np.isfinite(stacked).any(axis=0)
        mean = np.full(stacked.shape[1], np.nan)
        mean[present] = np.nanmean(stacked[:, present], axis=0)
        result[key] = mean
    return result


def _matrix(
    cosines: dict[tuple[int, int], NDArray[np.float64]], size: int, rows: slice
) -> NDArray[np.float64]:
    matrix = np.full((size, size), np.nan)
    for (i, j), values in cosines.items():
        chunk = values[rows]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            matrix[i, j] = matrix[j, i] = chunk.mean()
    return matrix


def _draw_matrix(axes: Axes, matrix: NDArray[np.float64], *, first: bool) -> None:
    """A cosine matrix with numbered ticks (the key sits in its own panel)."""
    size = matrix.shape[0]
    axes.imshow(matrix, cmap="RdBu", vmin=-1.0, vmax=1.0)
    numbers = [str(i + 1) for i in range(size)]
    axes.set_xticks(range(size), numbers, fontsize=7)
    axes.set_yticks(range(size), numbers if first else [""] * size, fontsize=7)
    if size <= 5:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value) and i != j:
                color = "white" if abs(value) > 0.6 else "black"
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)


def _draw_key(axes: Axes, labels: Sequence[str]) -> None:
    axes.axis("off")
    text = "\n".join(f"{i + 1}  {label}" for i, label in enumerate(labels))
    axes.text(0.0, 1.0, text, va="top", ha="left", fontsize=7, family="monospace")


def _plot_run(run: Run, groups: Sequence[LossGroup], options: PlotOptions) -> bytes | None:
    cosines = group_cosines(run.train, run.losses, groups)
    if not cosines:
        return None
    labels = [group.label for group in groups]
    pairs = sorted(cosines)
    if len(pairs) > _MAX_PAIR_ROWS:
        # Show the most conflicting pairs; the matrices above still show all of them.
        pairs = sorted(pairs, key=lambda key: float(np.nanmean(cosines[key])))[:_MAX_PAIR_ROWS]
        pairs.sort()
    matrices = len(groups) <= _MAX_MATRIX
    top = 2.6 if matrices else 0.0
    bottom = 0.16 * len(pairs) + 1.1
    figure = new_figure(11.0, top + bottom)
    # Two sub-figures, so the long pair labels of the heatmap do not squeeze the matrices.
    if matrices:
        halves = np.asarray(figure.subfigures(2, 1, height_ratios=[top, bottom]))
        upper, lower = halves[0], halves[1]
    else:
        upper, lower = None, figure
    steps = run.train.steps
    if upper is not None:
        panels = upper.subplots(1, _QUARTERS + 1, width_ratios=[1.0] * _QUARTERS + [1.2])
        bounds = np.linspace(0, len(steps), _QUARTERS + 1).astype(int)
        for quarter in range(_QUARTERS):
            axes = panels[quarter]
            part = slice(bounds[quarter], max(bounds[quarter + 1], bounds[quarter] + 1))
            _draw_matrix(axes, _matrix(cosines, len(groups), part), first=quarter == 0)
            axes.set_title(f"steps {steps[part][0]}..{steps[part][-1]}", fontsize=9)
        _draw_key(panels[_QUARTERS], labels)
    axes = lower.subplots()
    matrix = np.stack([cosines[key] for key in pairs], axis=1)
    x, means = bucket_matrix(steps, matrix, min(options.max_points, 400))
    rows = cell_edges(np.arange(len(pairs)))
    image = axes.pcolormesh(cell_edges(x), rows, means.T, cmap="RdBu", vmin=-1.0, vmax=1.0)
    pair_labels = [
        f"{labels[i]} | {labels[j]}" if i != j else f"within {labels[i]}" for i, j in pairs
    ]
    axes.set_yticks(range(len(pairs)), pair_labels, fontsize=7)
    axes.invert_yaxis()
    finish_axes(axes, f"{run.name}: cosine between loss gradients over time")
    lower.colorbar(image, ax=axes, label="cosine", shrink=0.9)
    return to_png(figure, options.dpi)


def plot_conflicts(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Per run: mean cosine matrices for each quarter of the run, and every pair over time."""
    groups = loss_groups(runs, options)
    plots = []
    for index, run in enumerate(runs):
        png = _plot_run(run, [group for _, group in present(run, groups)], options)
        if png is None:
            continue
        plots.append(
            Plot(
                key=f"conflict-{index + 1}",
                section=SECTION,
                title=f"Gradient cosines: {run.name}",
                png=png,
                caption=(
                    "Cosine between pairs of loss gradients (blue: aligned, red: conflicting). "
                    "Top: mean over each quarter of the run (numbers as in the key; a group's "
                    "diagonal is the mean within it). Bottom: each pair over time. "
                    "Sustained values below about -0.2 mean the losses pull the shared "
                    "parameters in opposite directions."
                ),
            )
        )
    return plots
