"""What the advisor reports: one finding, with its evidence and a concrete suggestion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["FINDINGS", "Evidence", "Finding", "format_findings"]

Evidence = dict[str, float | int | str]

# Finding codes, in the order a report lists them (most actionable first), with a title each.
FINDINGS: Mapping[str, str] = {
    "disconnected": "stuck at its minimum from the start (probably disconnected)",
    "saturated": "never moves from its starting maximum",
    "ignored": "effectively ignored by the update",
    "dominant": "dominates the update",
    "conflict": "gradients conflict",
    "stalled": "rising or flat while the others fall",
    "weight_collapse": "weight collapsed towards zero",
    "weight_explosion": "weight exploded",
    "dead_experts": "experts stay dead",
}


@dataclass(frozen=True)
class Finding:
    """One problem the advisor found in a run.

    Attributes:
        code: What kind of problem, one of ``FINDINGS`` (``"ignored"``, ``"conflict"``, ...).
        loss: The loss it concerns; ``"a|b"`` for a pair, the layer path for MoE layers, and
            ``"*/term"`` when the same finding holds for a whole group of module losses.
        message: One line: the loss, the problem and the numbers that show it.
        suggestion: What to change, concretely (a weight, a balancer, a thing to check).
        evidence: The numbers behind the message, by name.
        step: The last step the evidence covers.
        weak: Whether the evidence is indirect (e.g. shares estimated from loss magnitudes
            because gradient diagnostics were not logged).

    Example:
        >>> finding = Finding("ignored", "aux", "aux: share 0.02%", "raise its weight to 0.5")
        >>> print(finding)
        [ignored] aux: share 0.02% -> raise its weight to 0.5
    """

    code: str
    loss: str
    message: str
    suggestion: str
    evidence: Mapping[str, float | int | str] = field(default_factory=dict)
    step: int = 0
    weak: bool = False

    def __post_init__(self) -> None:
        if self.code not in FINDINGS:
            listed = ", ".join(repr(code) for code in FINDINGS)
            raise ValueError(f"`code` of Finding must be one of {{{listed}}}; got {self.code!r}")

    @property
    def title(self) -> str:
        """A short human title for the code."""
        return FINDINGS[self.code]

    @property
    def key(self) -> tuple[str, str]:
        """``(code, loss)``: the identity of a finding across evaluations."""
        return self.code, self.loss

    def __str__(self) -> str:
        weak = " (weak evidence)" if self.weak else ""
        return f"[{self.code}] {self.message}{weak} -> {self.suggestion}"


def format_findings(findings: Sequence[Finding], *, run: str | None = None) -> str:
    """Findings as text lines for a terminal (one per finding), or a line saying none.

    Example:
        >>> print(format_findings([], run="baseline"))
        advisor (baseline): no findings
    """
    where = f" ({run})" if run else ""
    if not findings:
        return f"advisor{where}: no findings"
    lines = [f"advisor{where}: {len(findings)} finding(s)"]
    lines += [f"  - {finding}" for finding in findings]
    return "\n".join(lines)
