"""Trend rules: a loss that never leaves its starting level, or that rises or stalls while the
other losses still improve."""

from __future__ import annotations

import numpy as np

from multiloss.report.advisor.evidence import (
    Context,
    fmt_value,
    improvement,
    loss_shares,
    median,
)
from multiloss.report.advisor.finding import Evidence, Finding
from multiloss.report.advisor.rules.connected import is_constant

__all__ = ["saturated_losses", "stalled_losses"]

_CHUNKS = 5  # chunk medians: coarse enough that noise does not look like movement


def _chunk_medians(values: np.ndarray) -> np.ndarray:
    """Medians of up to five consecutive chunks of at least three finite values each."""
    finite = values[np.isfinite(values)]
    count = min(_CHUNKS, finite.size // 3)
    if count < 2:
        return np.empty(0)
    return np.array([np.median(chunk) for chunk in np.array_split(finite, count)])


def saturated_losses(ctx: Context) -> list[Finding]:
    """Losses that stay within ``saturate_tol`` of their starting level for the whole run."""
    cfg = ctx.config
    if len(ctx.table) < max(cfg.min_rows, 2 * 3):
        return []
    findings = []
    for loss in ctx.losses:
        values = ctx.table.column(f"loss/{loss}")
        medians = _chunk_medians(values)
        if medians.size < 2 or is_constant(values, cfg.const_tol):
            continue
        start = float(medians[0])
        spread = float(np.max(np.abs(medians - start))) / max(abs(start), 1e-12)
        if spread > cfg.saturate_tol:
            continue
        steps = ctx.table.steps
        message = (
            f"{loss}: stayed within {spread:.1%} of its starting level {fmt_value(start)} for "
            f"the whole run (steps {steps[0]}..{steps[-1]}); it is not learning"
        )
        suggestion = (
            "it gets gradient but does not improve: check its targets and sign (a maximized loss "
            "needs a negative weight), whether it is saturated (a sigmoid or hinge at its bound, "
            "a temperature too low), and raise its weight or the learning rate"
        )
        evidence: Evidence = {"start": start, "max_relative_change": spread, "rows": len(ctx.table)}
        findings.append(Finding("saturated", loss, message, suggestion, evidence, ctx.last_step))
    return findings


def stalled_losses(ctx: Context) -> list[Finding]:
    """Losses that get worse over the window while at least one other loss improves by
    ``trend_tol``; or, for task losses, stay flat (within ``flat_tol``) while holding a real
    share of the update.

    Flat is not reported for module losses (``path/term``: balance losses, regularizers): they
    settle at their floor by design, and a Switch balance loss keeps a sizeable gradient there.
    """
    cfg = ctx.config
    if len(ctx.window) < cfg.min_rows or len(ctx.losses) < 2:
        return []
    progress = {
        loss: improvement(ctx.window.column(f"loss/{loss}"), ctx.weight(loss))
        for loss in ctx.losses
    }
    shares, _ = loss_shares(ctx.window, ctx.losses)
    findings = []
    for loss, own in progress.items():
        if not np.isfinite(own):
            continue
        better = {
            other: value
            for other, value in progress.items()
            if other != loss and np.isfinite(value) and value >= cfg.trend_tol
        }
        if not better:
            continue
        share = median(np.abs(shares[loss])) if loss in shares else float("nan")
        worse = own <= -cfg.trend_tol
        flat = (
            "/" not in loss
            and abs(own) < cfg.flat_tol
            and (not np.isfinite(share) or share >= cfg.min_share)
        )
        if not (worse or flat):
            continue
        leaders = sorted(better.items(), key=lambda item: -item[1])[:3]
        listed = ", ".join(f"{name} improved {value:.0%}" for name, value in leaders)
        if worse:
            state = f"got {-own:.0%} worse" if own > -1 else f"got {1 - own:.3g} times worse"
        else:
            state = f"stayed flat ({-own:+.1%})"
        message = f"{loss}: {state} over {ctx.span} while {listed}"
        if worse:
            suggestion = (
                "it is being traded away for the others: raise its weight (e.g. x2), or use a "
                "balancer that equalizes progress (multiloss.balancing.DWA or FAMO)"
            )
        else:
            suggestion = (
                "it stopped improving while the others still do: if it is at its floor (a "
                "balance loss at its optimum) this is fine; otherwise raise its weight or use "
                "multiloss.balancing.DWA"
            )
        evidence: Evidence = {"improvement": own, "share": share, "others_improving": len(better)}
        findings.append(Finding("stalled", loss, message, suggestion, evidence, ctx.last_step))
    return findings
