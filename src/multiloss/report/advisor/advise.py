"""Run every rule over a run (or a table of rows) and tidy the findings for people."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from multiloss._validation import describe
from multiloss.report.advisor.config import AdvisorConfig, check_config
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.finding import FINDINGS, Finding
from multiloss.report.advisor.rules import (
    conflicting_pairs,
    dead_experts,
    disconnected_losses,
    dominant_losses,
    ignored_losses,
    saturated_losses,
    stalled_losses,
    unstable_weights,
)
from multiloss.report.naming import last_part
from multiloss.report.reader import Run, read_run
from multiloss.report.table import Table

__all__ = ["RULES", "advise", "advise_table"]

RULES: tuple[Callable[[Context], list[Finding]], ...] = (
    disconnected_losses,
    saturated_losses,
    ignored_losses,
    dominant_losses,
    conflicting_pairs,
    stalled_losses,
    unstable_weights,
    dead_experts,
)

# A loss with the first of these findings does not also get the later ones: a disconnected
# loss trivially has no share and no progress, a saturated one trivially does not fall, an
# ignored loss does not move because the update ignores it, and a collapsed weight is the reason
# its loss is ignored.
_SUPERSEDES = {
    "disconnected": ("saturated", "ignored", "stalled"),
    "saturated": ("stalled",),
    "ignored": ("saturated",),
    "weight_collapse": ("ignored", "saturated"),
}
_MIN_GROUP = 3


def advise_table(table: Table, config: AdvisorConfig | None = None) -> list[Finding]:
    """Findings for the training rows in ``table`` (what the live hook calls)."""
    cfg = config or AdvisorConfig()
    if len(table) < cfg.min_rows:
        return []
    ctx = Context.build(table, cfg)
    findings = [finding for rule in RULES for finding in rule(ctx)]
    findings = _drop_superseded(findings, ctx.losses)
    findings = _merge_groups(findings)
    order = list(FINDINGS)
    return sorted(findings, key=lambda f: (order.index(f.code), f.loss))


def advise(
    run: str | Path | Run, config: AdvisorConfig | None = None, **thresholds: Any
) -> list[Finding]:
    """Check a run's loss health; each finding names the loss, the evidence and a fix.

    Args:
        run: A run directory (or a ``Run`` already read).
        config: Thresholds to start from (the defaults when ``None``).
        **thresholds: Any ``AdvisorConfig`` field, e.g. ``min_share=0.02, window=100``.

    Returns:
        Findings, most actionable first; an empty list for a healthy run.

    Example:
        >>> import tempfile
        >>> from multiloss.report.synthetic import SyntheticLoss, fabricate_run
        >>> folder = fabricate_run(tempfile.mkdtemp(),
        ...     [SyntheticLoss("task"), SyntheticLoss("aux", weight=1e-4)], steps=100)
        >>> [(f.code, f.loss) for f in advise(folder)]
        [('ignored', 'aux')]
    """
    check_config(config, "`config` of advise")
    cfg = AdvisorConfig.from_options(config, **thresholds)
    if not isinstance(run, Run | str | os.PathLike):
        raise TypeError(
            f"`run` of advise must be a run directory (a str or a Path) or a Run; got "
            f"{describe(run)}"
        )
    data = run if isinstance(run, Run) else read_run(run, what="`run` of advise")
    return advise_table(data.train, cfg)


def _drop_superseded(findings: Sequence[Finding], losses: Sequence[str]) -> list[Finding]:
    found = {finding.key for finding in findings}
    hidden = {(later, loss) for code, loss in found for later in _SUPERSEDES.get(code, ())}
    # "X dominates" says nothing new when every other loss is already reported as ignored
    # (with two losses, one below 1% means the other is above 99%).
    ignored = {loss for code, loss in found if code in ("ignored", "disconnected")}
    for code, loss in found:
        if code == "dominant" and all(other in ignored for other in losses if other != loss):
            hidden.add((code, loss))
    return [finding for finding in findings if finding.key not in hidden]


def _term(loss: str) -> str | None:
    """The grouping term of a finding's subject: ``*/balance`` for a module loss, and for a
    pair both parts' terms (``*/balance|depth``); ``None`` when nothing in it can group."""
    parts = loss.split("|")
    if not any("/" in part for part in parts):
        return None
    return "|".join(f"*/{last_part(part)}" if "/" in part else part for part in parts)


def _merge_groups(findings: Sequence[Finding]) -> list[Finding]:
    """Collapse one finding repeated over many module losses of one term into one line."""
    buckets: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        term = _term(finding.loss)
        if term is not None:
            buckets.setdefault((finding.code, term), []).append(finding)
    merged: list[Finding] = []
    absorbed: set[int] = set()
    for (code, term), members in buckets.items():
        if len(members) < _MIN_GROUP:
            continue
        absorbed.update(id(member) for member in members)
        names = [member.loss for member in members]
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        first = members[0]
        noun = "pairs" if "|" in term else "losses"
        message = f"{term}: {len(members)} {noun} ({listed}): {first.title}; e.g. {first.message}"
        evidence = {**first.evidence, "count": len(members)}
        merged.append(
            Finding(
                code,
                term,
                message,
                first.suggestion,
                evidence,
                max(member.step for member in members),
                any(member.weak for member in members),
            )
        )
    return [finding for finding in findings if id(finding) not in absorbed] + merged
