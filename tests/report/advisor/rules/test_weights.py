from __future__ import annotations

from pathlib import Path

from multiloss.report import read_run
from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.rules import unstable_weights
from tests.report import runs


def _codes(path: Path) -> list[tuple[str, str]]:
    ctx = Context.build(read_run(path).train, AdvisorConfig())
    return [f.key for f in unstable_weights(ctx)]


def test_collapse_and_explosion(tmp_path: Path) -> None:
    assert _codes(runs.collapsing_weight(tmp_path / "c", factor=0.95)) == [
        ("weight_collapse", "aux")
    ]
    assert _codes(runs.collapsing_weight(tmp_path / "e", factor=1.05)) == [
        ("weight_explosion", "aux")
    ]


def test_fixed_and_mildly_learned_weights_are_fine(tmp_path: Path) -> None:
    assert _codes(runs.healthy(tmp_path / "h")) == []
    # 0.99 ** 200 = 0.13: a big change, but far from collapse at 1e-3.
    assert _codes(runs.collapsing_weight(tmp_path / "m", factor=0.99)) == []


def test_message_shows_both_weights(tmp_path: Path) -> None:
    ctx = Context.build(read_run(runs.collapsing_weight(tmp_path / "c")).train, AdvisorConfig())
    (finding,) = unstable_weights(ctx)
    assert "from 0.95 to" in finding.message
    assert "Uncertainty" in finding.suggestion
    assert finding.evidence["ratio"] < 1e-3
