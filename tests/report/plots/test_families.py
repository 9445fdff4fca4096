"""Each plot family draws what it should, for one run and for several overlaid."""

from __future__ import annotations

from pathlib import Path

from multiloss.report import read_run
from multiloss.report.html import png_size
from multiloss.report.plots import (
    PLOT_FAMILIES,
    PlotOptions,
    plot_conflicts,
    plot_losses,
    plot_metrics,
    plot_moe_load,
    plot_moe_stats,
    plot_shares,
    plot_validation,
    plot_weights,
)
from multiloss.report.reader import Run
from tests.report import runs


def _check(plots: list, keys: list[str]) -> None:  # type: ignore[type-arg]
    assert [plot.key for plot in plots] == keys
    for plot in plots:
        width, height = png_size(plot.png)
        assert width > 100
        assert height > 30


def test_every_family_on_two_runs(two_runs: list[Run], options: PlotOptions) -> None:
    keys = [plot.key for family in PLOT_FAMILIES for plot in family(two_runs, options)]
    assert keys == [
        "overview-1",
        "weighted-overview",
        "losses-1",
        "weights",
        "shares",
        "conflict-1",
        "conflict-2",
        "validation-1",
        "moe-load-2-1",
        "moe-stats",
    ]


def test_losses_paginate(tmp_path: Path, options: PlotOptions) -> None:
    run = read_run(runs.many_layers(tmp_path / "m", layers=6))
    paged = PlotOptions(dpi=30, group="never", panels_per_figure=3)
    _check(plot_losses([run], paged), ["losses-1", "losses-2", "losses-3"])
    # Grouped: one panel for task and one for */balance.
    _check(plot_losses([run], PlotOptions(dpi=30, group="always")), ["losses-1"])


def test_shares_fall_back_to_magnitudes_with_a_note(tmp_path: Path, options: PlotOptions) -> None:
    run = read_run(runs.healthy(tmp_path / "h", steps=40, grad_diagnostics=False))
    (plot,) = plot_shares([run], options)
    assert plot.notes
    assert "estimated from weighted loss magnitudes" in plot.notes[0]
    run = read_run(runs.healthy(tmp_path / "g", steps=40))
    assert plot_shares([run], options)[0].notes == []


def test_families_without_data_draw_nothing(tmp_path: Path, options: PlotOptions) -> None:
    run = read_run(runs.healthy(tmp_path / "h", steps=40, grad_diagnostics=False))
    assert plot_conflicts([run], options) == []
    assert plot_validation([run], options) == []
    assert plot_moe_load([run], options) == []
    assert plot_moe_stats([run], options) == []
    assert plot_metrics([run], options) == []


def test_moe_heatmaps_one_per_layer(tmp_path: Path, options: PlotOptions) -> None:
    run = read_run(runs.many_layers(tmp_path / "m", layers=10))
    plots = plot_moe_load([run], options)
    _check(plots, ["moe-load-1-1", "moe-load-1-2"])  # 8 layers per image
    assert plot_metrics([run], options) == []  # MoE statistics are not "metrics"


def test_weights_and_empty_run(tmp_path: Path, options: PlotOptions) -> None:
    run = read_run(runs.collapsing_weight(tmp_path / "w", steps=40))
    _check(plot_weights([run], options), ["weights"])
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("")
    empty = read_run(folder)
    assert [plot for family in PLOT_FAMILIES for plot in family([empty], options)] == []
