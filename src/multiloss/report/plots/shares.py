"""The stacked share of the update that each loss accounts for."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from multiloss.report.downsample import bucket_matrix
from multiloss.report.naming import LossGroup
from multiloss.report.plots._common import (
    Plot,
    PlotOptions,
    finish_axes,
    grid_figure,
    loss_groups,
    present,
    series_color,
    to_png,
)
from multiloss.report.reader import Run
from multiloss.report.table import Table

__all__ = ["plot_shares", "share_matrix"]

SECTION = "Update share"


def share_matrix(table: Table, groups: Sequence[LossGroup]) -> tuple[NDArray[np.float64], bool]:
    """Rows x groups share of the update, and whether it came from gradients.

    With ``grad/share/<name>`` logged, a group's share is the sum of its members' signed shares
    (they sum to 1 over all losses). Without it, the share is estimated from the weighted loss
    magnitudes, ``|w_i L_i| / sum_j |w_j L_j|``, which ignores how steep each loss is.

    Example:
        >>> table = Table.from_rows([{"step": 1, "weighted/a": 3.0, "weighted/b": -1.0}])
        >>> matrix, from_gradients = share_matrix(table, [LossGroup("a", ("a",)),
        ...                                               LossGroup("b", ("b",))])
        >>> matrix.tolist(), from_gradients
        ([[0.75, 0.25]], False)
    """
    members = [m for group in groups for m in group.members]
    from_gradients = any(f"grad/share/{m}" in table for m in members)
    if from_gradients:
        columns = {m: table.column(f"grad/share/{m}") for m in members}
    else:
        magnitudes = {m: np.abs(table.column(f"weighted/{m}")) for m in members}
        total = np.nansum(np.stack(list(magnitudes.values())), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns = {m: values / total for m, values in magnitudes.items()}
    matrix = np.stack(
        [
            np.nansum(np.stack([columns[m] for m in group.members]), axis=0)
            if any(np.isfinite(columns[m]).any() for m in group.members)
            else np.full(len(table), np.nan)
            for group in groups
        ],
        axis=1,
    )
    return matrix, from_gradients


def plot_shares(runs: Sequence[Run], options: PlotOptions) -> list[Plot]:
    """Per run, a stacked area of each loss's share of the update (negative shares below 0)."""
    usable = [run for run in runs if len(run.train) and run.losses]
    if not usable:
        return []
    groups = loss_groups(usable, options)
    figure, axes_list = grid_figure(len(usable), columns=2, panel_height=3.4, width=11.0)
    notes = []
    for axes, run in zip(axes_list, usable, strict=True):
        here = present(run, groups)  # only this run's losses; colors stay those of all runs
        matrix, from_gradients = share_matrix(run.train, [group for _, group in here])
        steps, means = bucket_matrix(run.train.steps, matrix, options.max_points)
        means = np.nan_to_num(means, nan=0.0)
        colors = [series_color(index) for index, _ in here]
        labels = [group.label for _, group in here]
        # Stack the positive parts upward and the negative parts (a loss whose gradient points
        # against the update) downward, so both stay visible and nothing cancels out.
        axes.stackplot(steps, np.clip(means, 0, None).T, colors=colors, labels=labels, alpha=0.85)
        if np.any(means < 0):
            axes.stackplot(steps, np.clip(means, None, 0).T, colors=colors, alpha=0.85)
            axes.axhline(0.0, color="black", linewidth=0.6)
        source = "gradient share" if from_gradients else "weighted-loss magnitude (estimate)"
        finish_axes(axes, f"{run.name}: share of the update ({source})", legend=True)
        if not from_gradients:
            notes.append(
                f"{run.name}: grad/share was not logged, so shares are estimated from weighted "
                "loss magnitudes (turn on Trainer(grad_diagnostics=True) for the real ones)."
            )
    return [
        Plot(
            key="shares",
            section=SECTION,
            title="Share of the update per loss",
            png=to_png(figure, options.dpi),
            caption=(
                "How much of each optimizer update comes from each loss (signed shares that sum "
                "to 1; a group's share is its members' sum). A loss with a sliver "
                "is effectively ignored; one with nearly everything drowns out the others."
            ),
            notes=notes,
        )
    ]
