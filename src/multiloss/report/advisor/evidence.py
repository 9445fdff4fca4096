"""Numbers the rules share: windows, per-loss shares, trends, and readable formatting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from multiloss.report.advisor.config import AdvisorConfig
from multiloss.report.table import Table

__all__ = [
    "Context",
    "fmt_share",
    "fmt_value",
    "fraction",
    "improvement",
    "loss_shares",
    "median",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Context:
    """What every rule sees: the whole run, its last window, the losses and the thresholds.

    Example:
        >>> rows = [{"step": s, "loss/a": 1.0, "weight/a": 0.5} for s in range(1, 81)]
        >>> ctx = Context.build(Table.from_rows(rows), AdvisorConfig())
        >>> ctx.span, ctx.losses, ctx.weight("a")
        ('steps 31..80', ['a'], 0.5)
    """

    table: Table
    window: Table
    losses: list[str]
    config: AdvisorConfig

    @classmethod
    def build(cls, table: Table, config: AdvisorConfig) -> Context:
        """The context for ``table`` (training rows) under ``config``."""
        return cls(table, table.tail(config.window), table.names("loss/"), config)

    @property
    def span(self) -> str:
        """``steps a..b`` of the window, for messages."""
        steps = self.window.steps
        return f"steps {steps[0]}..{steps[-1]}" if len(steps) else "no steps"

    @property
    def last_step(self) -> int:
        """The last logged step (0 for an empty table)."""
        return int(self.table.steps[-1]) if len(self.table) else 0

    def weight(self, loss: str, *, window: bool = True) -> float:
        """Median weight of ``loss`` (in the window by default); NaN when not logged."""
        table = self.window if window else self.table
        return median(table.column(f"weight/{loss}"))


def median(values: FloatArray) -> float:
    """Median of the finite values (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def fraction(condition: NDArray[np.bool_], values: FloatArray) -> float:
    """Fraction of the finite ``values`` where ``condition`` holds (0 when none are finite)."""
    finite = np.isfinite(values)
    count = int(finite.sum())
    return float((condition & finite).sum() / count) if count else 0.0


def loss_shares(window: Table, losses: list[str]) -> tuple[dict[str, FloatArray], bool]:
    """Per-loss share of the update in ``window``, and whether it came from gradients.

    ``grad/share/<name>`` when logged (signed; a zero-gradient loss has share 0); otherwise
    ``|weighted| / sum |weighted|`` over the losses, which is weaker evidence: it ignores how
    steep each loss is.
    """
    if any(f"grad/share/{loss}" in window for loss in losses):
        return {loss: window.column(f"grad/share/{loss}") for loss in losses}, True
    magnitudes = {loss: np.abs(window.column(f"weighted/{loss}")) for loss in losses}
    if not magnitudes:
        return {}, False
    total = np.nansum(np.stack(list(magnitudes.values())), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = {
            loss: np.where(total > 0, values / total, np.nan) for loss, values in magnitudes.items()
        }
    return shares, False


def improvement(values: FloatArray, weight: float) -> float:
    """Relative progress over a window: median of its last third vs its first third.

    Positive means the loss got better: lower for a minimized loss, higher for a maximized one
    (negative weight). NaN when there are too few finite values.
    """
    finite = values[np.isfinite(values)]
    if finite.size < 6:
        return float("nan")
    third = finite.size // 3
    first, last = float(np.median(finite[:third])), float(np.median(finite[-third:]))
    scale = max(abs(first), 1e-12)
    change = (last - first) / scale
    return change if weight < 0 else -change


def fmt_value(value: float) -> str:
    """A number in 3 significant digits (scientific outside 1e-3..1e4)."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.2e}"


def fmt_share(share: float) -> str:
    """A share as a percentage, with more digits for tiny ones."""
    if abs(share) >= 0.01:
        return f"{share:.1%}"
    return "0%" if share == 0 else f"{share * 100:.2g}%"
