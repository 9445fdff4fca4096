"""Plot families of the run report; each takes the runs and options and returns ``Plot``s."""

from collections.abc import Callable, Sequence

from multiloss.report.plots._common import Plot, PlotOptions
from multiloss.report.plots.conflicts import plot_conflicts
from multiloss.report.plots.losses import plot_losses, plot_weighted_overview
from multiloss.report.plots.metrics import plot_metrics, plot_overview
from multiloss.report.plots.moe import plot_moe_load, plot_moe_stats
from multiloss.report.plots.shares import plot_shares
from multiloss.report.plots.validation import plot_validation
from multiloss.report.plots.weights import plot_balancer_state, plot_weights
from multiloss.report.reader import Run

__all__ = [
    "PLOT_FAMILIES",
    "Plot",
    "PlotOptions",
    "plot_balancer_state",
    "plot_conflicts",
    "plot_losses",
    "plot_metrics",
    "plot_moe_load",
    "plot_moe_stats",
    "plot_overview",
    "plot_shares",
    "plot_validation",
    "plot_weighted_overview",
    "plot_weights",
]

# In page order.
PLOT_FAMILIES: tuple[Callable[[Sequence[Run], PlotOptions], list[Plot]], ...] = (
    plot_overview,
    plot_weighted_overview,
    plot_losses,
    plot_weights,
    plot_balancer_state,
    plot_shares,
    plot_conflicts,
    plot_validation,
    plot_metrics,
    plot_moe_load,
    plot_moe_stats,
)
