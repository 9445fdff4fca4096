from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from multiloss.report.html import png_size
from multiloss.report.naming import LossGroup
from multiloss.report.plots import PlotOptions
from multiloss.report.plots._common import (
    draw_series,
    grid_figure,
    group_series,
    new_figure,
    to_png,
    wants_log,
)
from multiloss.report.table import Table


def test_log_scale_only_for_positive_values_spanning_decades() -> None:
    assert wants_log([np.array([1e-3, 1.0])], 2.0)
    assert not wants_log([np.array([0.5, 1.0])], 2.0)
    assert not wants_log([np.array([-1.0, 1e3])], 2.0)  # a negative value: no log axis
    assert wants_log([np.array([1.0, np.nan]), np.array([1e-2])], 2.0)  # across series


def test_group_series_mean_band_and_sum() -> None:
    rows = [{"step": 1, "loss/a/x": 1.0, "loss/b/x": 3.0}, {"step": 2, "loss/a/x": 2.0}]
    table = Table.from_rows(rows)
    group = LossGroup("*/x", ("a/x", "b/x"))
    series = group_series(table, "loss/", group)
    assert series.values.tolist() == [2.0, 2.0]
    assert series.low is not None
    assert series.low.tolist() == [1.0, 2.0]
    assert series.high is not None
    assert series.high.tolist() == [3.0, 2.0]
    assert group_series(table, "loss/", group, total=True).values.tolist() == [4.0, 2.0]


def test_figures_render_without_pyplot() -> None:
    figure, axes = grid_figure(4, columns=3)
    assert isinstance(figure, Figure)
    assert len(axes) == 4
    assert len(figure.axes) == 4
    drawn = draw_series(
        axes[0],
        group_series(
            Table.from_rows([{"step": s, "v": 1.0 / s} for s in range(1, 200)]),
            "",
            LossGroup("v", ("v",)),
        ),
        PlotOptions(max_points=20),
        color="#000000",
    )
    assert drawn.size >= 20  # the line plus its band
    png = to_png(new_figure(2.0, 1.0), dpi=50)
    assert png_size(png) == (100, 50)
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # nothing registered with pyplot


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_points": 5}, "`max_points` of PlotOptions must be >= 10; got 5"),
        ({"smoothing": 1.5}, "`smoothing` of PlotOptions must be <= 1"),
        ({"group": "some"}, r"`group` of PlotOptions must be one of \{'auto', 'always', 'never'\}"),
        ({"dpi": 5}, "`dpi` of PlotOptions must be >= 20; got 5"),
        ({"log_decades": 0.1}, "`log_decades` of PlotOptions must be >= 0.5; got 0.1"),
    ],
)
def test_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PlotOptions(**kwargs)  # type: ignore[arg-type]
