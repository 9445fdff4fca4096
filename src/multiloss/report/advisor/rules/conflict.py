"""Conflict rule: two losses whose gradients point apart for most of the window."""

from __future__ import annotations

from multiloss.report.advisor.evidence import Context, fraction, median
from multiloss.report.advisor.finding import Evidence, Finding
from multiloss.report.naming import split_pair

__all__ = ["conflicting_pairs"]


def conflicting_pairs(ctx: Context) -> list[Finding]:
    """Pairs whose ``grad/cos`` stays below ``conflict_cos`` in ``conflict_persist`` of rows."""
    cfg = ctx.config
    if len(ctx.window) < cfg.min_rows:
        return []
    findings = []
    for pair in ctx.window.names("grad/cos/"):
        values = ctx.window.column(f"grad/cos/{pair}")
        held = fraction(values < cfg.conflict_cos, values)
        if held < cfg.conflict_persist:
            continue
        a, b = split_pair(pair, ctx.losses)
        cosine = median(values)
        message = (
            f"{a} and {b}: their gradients conflict (cosine < {cfg.conflict_cos:g}) in "
            f"{held:.0%} of {ctx.span}, median cosine {cosine:.2f}; progress on one undoes the "
            "other"
        )
        suggestion = (
            "use a conflict-aware balancer (multiloss.balancing.PCGrad, CAGrad or UPGrad), give "
            "each loss more parameters of its own (separate heads), or check that neither is "
            "maximized by mistake (a sign error makes two losses exactly opposed)"
        )
        evidence: Evidence = {"median_cosine": cosine, "fraction_below": held, "a": a, "b": b}
        findings.append(
            Finding("conflict", f"{a}|{b}", message, suggestion, evidence, ctx.last_step)
        )
    return findings
