"""The loss-health advisor: rules that read the logged losses, shares, cosines and weights,
and name what looks wrong with the evidence and a concrete fix."""

from multiloss.report.advisor.advise import RULES, advise, advise_table
from multiloss.report.advisor.config import AdvisorConfig
from multiloss.report.advisor.finding import FINDINGS, Finding, format_findings
from multiloss.report.advisor.hook import AdvisorHook

__all__ = [
    "FINDINGS",
    "RULES",
    "AdvisorConfig",
    "AdvisorHook",
    "Finding",
    "advise",
    "advise_table",
    "format_findings",
]
