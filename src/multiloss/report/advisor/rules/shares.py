"""Share rules: a loss the update ignores (below ``min_share``) or that drowns the others."""

from __future__ import annotations

import numpy as np

from multiloss.report.advisor.evidence import (
    Context,
    fmt_share,
    fmt_value,
    fraction,
    loss_shares,
    median,
)
from multiloss.report.advisor.finding import Evidence, Finding
from multiloss.report.advisor.reweight import gram_weight, linear_weight

__all__ = ["dominant_losses", "ignored_losses"]

_WEAK = " (estimated from weighted-loss magnitudes: log gradient diagnostics for a firmer figure)"
_ROUGH = " (a rough estimate: gradient norms and cosines were not all logged)"


def _reweight(
    ctx: Context, loss: str, share: float, target: float, from_gradients: bool
) -> tuple[float, str]:
    """The suggested weight and a note on how firm it is."""
    weight = ctx.weight(loss)
    if from_gradients:
        exact = gram_weight(ctx, loss, target)
        if exact is not None:
            return exact, ""
        return linear_weight(weight, share, target), _ROUGH
    return linear_weight(weight, share, target), _WEAK


def _source(from_gradients: bool) -> str:
    return "share of the update" if from_gradients else "share of the weighted loss"


def ignored_losses(ctx: Context) -> list[Finding]:
    """Losses whose share stays below ``min_share`` for ``persist`` of the window."""
    cfg = ctx.config
    if len(ctx.losses) < 2 or len(ctx.window) < cfg.min_rows:
        return []
    shares, from_gradients = loss_shares(ctx.window, ctx.losses)
    findings = []
    for loss, values in shares.items():
        held = fraction(np.abs(values) < cfg.min_share, values)
        if held < cfg.persist:
            continue
        share = median(np.abs(values))
        weight = ctx.weight(loss)
        evidence: Evidence = {"median_share": share, "fraction_below": held, "weight": weight}
        if share > 0 and np.isfinite(weight) and weight != 0:
            new, note = _reweight(ctx, loss, share, cfg.target_share, from_gradients)
            evidence["suggested_weight"] = new
            suggestion = (
                f"raise its weight from {fmt_value(weight)} to about {fmt_value(new)} to give it "
                f"about {cfg.target_share:.0%} of the update (the other weights unchanged)" + note
            )
        elif weight == 0:
            suggestion = "its weight is 0: give it a positive weight, or drop the loss"
        else:
            suggestion = "no weight helps while its gradient is zero: check that it is connected"
        message = (
            f"{loss}: {_source(from_gradients)} stayed below {cfg.min_share:.0%} in "
            f"{held:.0%} of {ctx.span} (median {fmt_share(share)}); it barely affects training"
        )
        findings.append(
            Finding(
                "ignored", loss, message, suggestion, evidence, ctx.last_step, not from_gradients
            )
        )
    return findings


def dominant_losses(ctx: Context) -> list[Finding]:
    """Losses whose share stays above ``max_share`` for ``persist`` of the window."""
    cfg = ctx.config
    if len(ctx.losses) < 2 or len(ctx.window) < cfg.min_rows:
        return []
    shares, from_gradients = loss_shares(ctx.window, ctx.losses)
    findings = []
    for loss, values in shares.items():
        held = fraction(values > cfg.max_share, values)
        if held < cfg.persist:
            continue
        share = median(values)
        weight = ctx.weight(loss)
        evidence: Evidence = {"median_share": share, "fraction_above": held, "weight": weight}
        rest = [name for name in ctx.losses if name != loss]
        others = ", ".join(rest) if len(rest) <= 4 else f"{len(rest)} losses"
        note = "" if from_gradients else _WEAK
        new = float("nan")
        if np.isfinite(weight) and weight != 0:
            if from_gradients:
                new = gram_weight(ctx, loss, cfg.dominant_target) or float("nan")
            elif 0 < share < 1:
                new = linear_weight(weight, share, cfg.dominant_target)
        if np.isfinite(new):
            evidence["suggested_weight"] = new
            suggestion = (
                f"lower its weight from {fmt_value(weight)} to about {fmt_value(new)} to bring it "
                f"to about {cfg.dominant_target:.0%} of the update, or raise the others' weights, "
                "or let a balancer share the update (multiloss.balancing.Normalize, GradNorm)"
                + note
            )
        else:
            suggestion = (
                "raise the other losses' weights, or let a balancer share the update "
                "(multiloss.balancing.Normalize, GradNorm)" + note
            )
        message = (
            f"{loss}: {_source(from_gradients)} stayed above {cfg.max_share:.0%} in {held:.0%} "
            f"of {ctx.span} (median {fmt_share(share)}); the others ({others}) barely count"
        )
        if share > 1:
            message += " and partly push against it"
        findings.append(
            Finding(
                "dominant", loss, message, suggestion, evidence, ctx.last_step, not from_gradients
            )
        )
    return findings
