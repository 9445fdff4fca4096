from __future__ import annotations

from pathlib import Path

import pytest

from multiloss.report import read_run
from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.rules import conflicting_pairs
from multiloss.report.table import Table
from tests.report import runs


def _rows(cosines: list[float]) -> Table:
    return Table.from_rows(
        [
            {"step": i + 1, "loss/a": 1.0, "loss/b": 1.0, "grad/cos/a|b": c}
            for i, c in enumerate(cosines)
        ]
    )


def test_directly_opposed_losses(tmp_path: Path) -> None:
    table = read_run(runs.opposed(tmp_path / "run")).train
    (finding,) = conflicting_pairs(Context.build(table, AdvisorConfig()))
    assert finding.loss == "adversary|task"
    assert finding.evidence["median_cosine"] == pytest.approx(-1.0, abs=0.1)
    assert "PCGrad" in finding.suggestion


@pytest.mark.parametrize(
    ("below", "expected"),
    [(12, 1), (11, 0)],  # 12 of 20 rows = 60% (the default "most of the window"), 11 = 55%
)
def test_persistence_threshold(below: int, expected: int) -> None:
    cosines = [-0.5] * below + [0.3] * (20 - below)
    assert len(conflicting_pairs(Context.build(_rows(cosines), AdvisorConfig()))) == expected


def test_cosine_threshold_is_an_option() -> None:
    table = _rows([-0.1] * 20)
    assert conflicting_pairs(Context.build(table, AdvisorConfig())) == []
    config = AdvisorConfig(conflict_cos=-0.05)
    assert [f.loss for f in conflicting_pairs(Context.build(table, config))] == ["a|b"]


def test_healthy_run_has_no_conflict(healthy_run: Path) -> None:
    assert conflicting_pairs(Context.build(read_run(healthy_run).train, AdvisorConfig())) == []
