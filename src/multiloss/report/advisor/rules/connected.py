"""Connection rule: a loss whose gradient never reaches the model, or that never moves."""

from __future__ import annotations

import numpy as np

from multiloss.report.advisor.evidence import Context, fmt_value, fraction, median
from multiloss.report.advisor.finding import Evidence, Finding

__all__ = ["disconnected_losses", "is_constant"]

_CHECK = (
    "check that it depends on trainable parameters: the layer that emits it must run in the "
    "forward pass with use_aux_loss on, and no .detach() or torch.no_grad() may cut it off "
    "(multiloss.record() is for values that should not train)"
)


def is_constant(values: np.ndarray, tol: float) -> bool:
    """Whether the finite ``values`` spread by at most ``tol`` relative to their size."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return False
    scale = max(float(np.max(np.abs(finite))), 1e-12)
    return float(finite.max() - finite.min()) <= tol * scale


def disconnected_losses(ctx: Context) -> list[Finding]:
    """Losses with a zero gradient throughout the run, or (without gradient diagnostics) a
    value that has not changed since the first step."""
    cfg = ctx.config
    if len(ctx.table) < cfg.min_rows:
        return []
    # The scale a "zero" gradient is judged against: the largest median norm of another loss.
    typical = {loss: median(ctx.table.column(f"grad/norm/{loss}")) for loss in ctx.losses}
    findings = []
    for loss in ctx.losses:
        values = ctx.table.column(f"loss/{loss}")
        first = values[np.isfinite(values)][:1]
        start = float(first[0]) if first.size else float("nan")
        norms = ctx.table.column(f"grad/norm/{loss}")
        if np.isfinite(norms).sum() >= cfg.min_rows:
            others = [n for o, n in typical.items() if o != loss and np.isfinite(n) and n > 0]
            limit = cfg.zero_grad * max(others, default=1.0)
            held = fraction(np.abs(norms) <= limit, norms)
            if held < cfg.persist:
                continue
            moving = not is_constant(values, cfg.const_tol)
            state = (
                "its value moves only through other losses' updates"
                if moving
                else f"its value stayed at {fmt_value(start)} from the first step"
            )
            message = (
                f"{loss}: its gradient norm was zero in {held:.0%} of all logged rows; {state}"
            )
            evidence: Evidence = {
                "fraction_zero_grad": held,
                "first_value": start,
                "max_grad_norm": float(np.nanmax(np.abs(norms))),
            }
            findings.append(Finding("disconnected", loss, message, _CHECK, evidence, ctx.last_step))
        elif is_constant(values, cfg.const_tol):
            rows = int(np.isfinite(values).sum())
            message = (
                f"{loss}: its value stayed at {fmt_value(start)} in all {rows} logged rows, "
                "from the first step on; a loss that never moves is probably not connected"
            )
            evidence = {"value": start, "rows": rows}
            findings.append(
                Finding(
                    "disconnected",
                    loss,
                    message,
                    _CHECK + " (gradient diagnostics were not logged; turn them on to confirm)",
                    evidence,
                    ctx.last_step,
                    weak=True,
                )
            )
    return findings
