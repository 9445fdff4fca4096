from __future__ import annotations

from pathlib import Path

from multiloss.report import read_run
from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.rules import dead_experts
from multiloss.report.table import Table


def test_names_the_layer_and_the_dead_experts(moe_run: Path) -> None:
    (finding,) = dead_experts(Context.build(read_run(moe_run).train, AdvisorConfig()))
    assert finding.loss == "blocks.1.moe"
    assert "2 of 8 experts (2, 5)" in finding.message
    assert "blocks.1.moe/balance (now 0.01" in finding.suggestion


def test_dead_fraction_alone_is_weak_evidence() -> None:
    rows = [{"step": s, "metric/m/dead_fraction": 0.25, "loss/task": 1.0} for s in range(1, 31)]
    (finding,) = dead_experts(Context.build(Table.from_rows(rows), AdvisorConfig()))
    assert finding.weak
    assert finding.loss == "m"
    assert "add a load-balancing loss" in finding.suggestion


def test_experts_that_recover_are_not_dead() -> None:
    # Starved for the first half of the window only: below the 80% persistence default.
    rows = []
    for s in range(1, 51):
        load = [0.0 if s < 25 else 0.25, 0.25, 0.25, 0.25]
        rows.append({"step": s, **{f"metric/m/load/{i}": v for i, v in enumerate(load)}})
    assert dead_experts(Context.build(Table.from_rows(rows), AdvisorConfig())) == []
