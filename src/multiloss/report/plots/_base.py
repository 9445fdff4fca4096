"""What the plot families share as data: the options, a rendered plot, a series to draw."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from multiloss._validation import check_choice, check_finite_float, check_int
from multiloss.report.naming import GROUP_MODES

__all__ = ["Plot", "PlotOptions", "Series"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class PlotOptions:
    """How the report draws its plots.

    Args:
        max_points: Most points per line; longer series are bucketed (mean line, min-max band).
        smoothing: EMA window as a fraction of the number of plotted points (0 = none).
        group: Group module losses by their last name part: ``"auto"`` (when there are more
            than ``max_series`` losses), ``"always"`` or ``"never"``.
        max_series: Losses shown ungrouped under ``group="auto"``.
        panels_per_figure: Most small-multiple panels in one image (more make more images).
        dpi: Resolution of the PNG files.
        log_decades: A positive series spanning at least this many decades gets a log axis.

    Example:
        >>> PlotOptions(max_points=300)
        PlotOptions(max_points=300, smoothing=0.02, group='auto', max_series=12, \
panels_per_figure=12, dpi=96, log_decades=2.0)
    """

    max_points: int = 600
    smoothing: float = 0.02
    group: str = "auto"
    max_series: int = 12
    panels_per_figure: int = 12
    dpi: int = 96
    log_decades: float = 2.0

    def __post_init__(self) -> None:
        check_int(self.max_points, "`max_points` of PlotOptions", min_value=10)
        check_finite_float(self.smoothing, "`smoothing` of PlotOptions", min_value=0, max_value=1)
        check_choice(self.group, "`group` of PlotOptions", GROUP_MODES)
        check_int(self.max_series, "`max_series` of PlotOptions", min_value=1)
        check_int(self.panels_per_figure, "`panels_per_figure` of PlotOptions", min_value=1)
        check_int(self.dpi, "`dpi` of PlotOptions", min_value=20)
        check_finite_float(self.log_decades, "`log_decades` of PlotOptions", min_value=0.5)


@dataclass
class Plot:
    """One rendered image of the report.

    Attributes:
        key: File stem, unique within a report (``losses-1``).
        section: Section heading it belongs under.
        title: Caption heading.
        png: The encoded PNG.
        caption: What the image shows and how to read it.
        notes: Warnings about the evidence (e.g. a fallback was used).

    Example:
        >>> Plot("losses-1", "Losses", "Each loss", b"...")
        Plot(key='losses-1', section='Losses', bytes=3)
    """

    key: str
    section: str
    title: str
    png: bytes
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Plot(key={self.key!r}, section={self.section!r}, bytes={len(self.png)})"


@dataclass(frozen=True)
class Series:
    """One line to draw: steps, values, and an optional band (e.g. min-max over group members).

    Example:
        >>> Series(np.arange(2.0), np.ones(2)).low is None
        True
    """

    steps: FloatArray
    values: FloatArray
    low: FloatArray | None = None
    high: FloatArray | None = None
