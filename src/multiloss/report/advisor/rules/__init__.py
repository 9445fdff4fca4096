"""The advisor's rules, one family per file. Each takes a ``Context`` and returns findings."""

from multiloss.report.advisor.rules.conflict import conflicting_pairs
from multiloss.report.advisor.rules.connected import disconnected_losses
from multiloss.report.advisor.rules.experts import dead_experts
from multiloss.report.advisor.rules.shares import dominant_losses, ignored_losses
from multiloss.report.advisor.rules.trends import saturated_losses, stalled_losses
from multiloss.report.advisor.rules.weights import unstable_weights

__all__ = [
    "conflicting_pairs",
    "dead_experts",
    "disconnected_losses",
    "dominant_losses",
    "ignored_losses",
    "saturated_losses",
    "stalled_losses",
    "unstable_weights",
]
