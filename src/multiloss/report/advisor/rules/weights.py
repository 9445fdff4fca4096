"""Weight rules: a weight set by a learned balancer that collapses to zero or explodes."""

from __future__ import annotations

import numpy as np

from multiloss.report.advisor.evidence import Context, fmt_value, median
from multiloss.report.advisor.finding import Evidence, Finding

__all__ = ["unstable_weights"]

_HOW = (
    "lower the balancer's learning rate, bound its weights (e.g. clamp the log-variance of "
    "Uncertainty), or warm it up with multiloss.balancing.Scheduled; if this is a schedule you "
    "set on purpose, ignore this"
)


def unstable_weights(ctx: Context) -> list[Finding]:
    """Weights whose window median left ``[collapse, explode]`` times their first value."""
    cfg = ctx.config
    if len(ctx.table) < cfg.min_rows or len(ctx.window) < 2:
        return []
    findings = []
    for loss in ctx.losses:
        weights = np.abs(ctx.table.column(f"weight/{loss}"))
        logged = weights[~np.isnan(weights)]
        if logged.size < 2:
            continue
        first = float(logged[0])
        recent = np.abs(ctx.window.column(f"weight/{loss}"))
        if not np.isfinite(first) or first == 0 or not np.isfinite(recent).any():
            continue  # no recent weights: the loss is no longer logged, nothing to judge
        late = median(recent)
        ratio = late / first
        evidence: Evidence = {"first_weight": first, "recent_weight": late, "ratio": ratio}
        if ratio <= cfg.collapse:
            message = (
                f"{loss}: its weight fell from {fmt_value(first)} to {fmt_value(late)} "
                f"(x{ratio:.1e}) by {ctx.span}; the balancer has switched this loss off"
            )
            findings.append(
                Finding("weight_collapse", loss, message, _HOW, evidence, ctx.last_step)
            )
        elif ratio >= cfg.explode or not np.isfinite(ratio):
            message = (
                f"{loss}: its weight grew from {fmt_value(first)} to {fmt_value(late)} "
                f"(x{ratio:.1e}) by {ctx.span}; it will swamp the other losses or overflow"
            )
            findings.append(
                Finding("weight_explosion", loss, message, _HOW, evidence, ctx.last_step)
            )
    return findings
