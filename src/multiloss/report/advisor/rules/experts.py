"""MoE rule: experts of a layer that receive (almost) no tokens for most of the window."""

from __future__ import annotations

from multiloss.report.advisor.evidence import Context, fmt_value, fraction, median
from multiloss.report.advisor.finding import Evidence, Finding
from multiloss.report.experts import load_matrix, moe_layers

__all__ = ["dead_experts"]


def _suggestion(ctx: Context, layer: str) -> str:
    balance = [loss for loss in ctx.losses if loss.startswith(f"{layer}/")]
    if balance:
        weight = ctx.weight(balance[0])
        raise_it = f"raise the weight of {balance[0]} (now {fmt_value(weight)}, e.g. x10)"
    else:
        raise_it = "add a load-balancing loss to this layer"
    return (
        f"{raise_it}, or use bias-based balancing / router noise / a capacity limit, or "
        "re-initialize the router of the dead experts"
    )


def dead_experts(ctx: Context) -> list[Finding]:
    """Per MoE layer, the experts whose load stays under ``dead_load`` x the mean load."""
    cfg = ctx.config
    if len(ctx.window) < cfg.min_rows:
        return []
    findings = []
    for layer, experts in moe_layers(ctx.window).items():
        relative = load_matrix(ctx.window, layer, experts)
        dead = [
            expert
            for column, expert in enumerate(experts)
            if fraction(relative[:, column] < cfg.dead_load, relative[:, column]) >= cfg.persist
        ]
        if not dead:
            continue
        shown = ", ".join(str(e) for e in dead[:12]) + (" ..." if len(dead) > 12 else "")
        message = (
            f"{layer}: {len(dead)} of {len(experts)} experts ({shown}) got under "
            f"{cfg.dead_load:.0%} of the mean load in {cfg.persist:.0%} or more of {ctx.span}"
        )
        evidence: Evidence = {"dead": len(dead), "experts": len(experts), "dead_experts": shown}
        findings.append(
            Finding(
                "dead_experts", layer, message, _suggestion(ctx, layer), evidence, ctx.last_step
            )
        )
    for layer in _layers_with_dead_fraction_only(ctx):
        values = ctx.window.column(f"metric/{layer}/dead_fraction")
        held = fraction(values > 0, values)
        if held < cfg.persist:
            continue
        dead_share = median(values)
        message = (
            f"{layer}: dead_fraction stayed above 0 in {held:.0%} of {ctx.span} (median "
            f"{dead_share:.0%} of experts dead)"
        )
        evidence = {"median_dead_fraction": dead_share, "fraction_rows": held}
        findings.append(
            Finding(
                "dead_experts",
                layer,
                message,
                _suggestion(ctx, layer),
                evidence,
                ctx.last_step,
                weak=True,
            )
        )
    return findings


def _layers_with_dead_fraction_only(ctx: Context) -> list[str]:
    """Layers that log ``dead_fraction`` but no per-expert load (weaker evidence)."""
    with_load = set(moe_layers(ctx.window))
    suffix = "/dead_fraction"
    return [
        name[: -len(suffix)]
        for name in ctx.window.names("metric/")
        if name.endswith(suffix) and name[: -len(suffix)] not in with_load
    ]
