from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multiloss.report import read_run
from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.rules import dominant_losses, ignored_losses
from tests.report import runs


def _ctx(path: Path, **options: float) -> Context:
    return Context.build(read_run(path).train, AdvisorConfig.from_options(**options))


def _median_share(path: Path, loss: str, rows: int = 50) -> float:
    return float(np.median(read_run(path).train.tail(rows).column(f"grad/share/{loss}")))


def test_suggested_weight_gives_the_target_share(tmp_path: Path) -> None:
    # Independent check: rerun the same run with the suggested weight and measure the share.
    (finding,) = ignored_losses(_ctx(runs.tiny_weight(tmp_path / "tiny")))
    assert finding.loss == "aux"
    assert finding.evidence["weight"] == pytest.approx(1e-3)
    suggested = float(finding.evidence["suggested_weight"])
    assert f"{suggested:.3g}" in finding.suggestion
    assert "10% of the update" in finding.suggestion
    fixed = runs.tiny_weight(tmp_path / "fixed", weight=suggested)
    assert _median_share(fixed, "aux") == pytest.approx(0.10, abs=0.01)


def test_target_share_is_an_option(tmp_path: Path) -> None:
    ctx = _ctx(runs.tiny_weight(tmp_path / "tiny"), target_share=0.3)
    (finding,) = ignored_losses(ctx)
    fixed = runs.tiny_weight(tmp_path / "fixed", weight=float(finding.evidence["suggested_weight"]))
    assert _median_share(fixed, "aux") == pytest.approx(0.30, abs=0.01)


def test_fallback_share_from_weighted_magnitudes(tmp_path: Path) -> None:
    run = runs.tiny_weight(tmp_path / "tiny", grad_diagnostics=False)
    (finding,) = ignored_losses(_ctx(run))
    assert finding.weak
    assert "share of the weighted loss" in finding.message
    # Reference: |w L| / sum |w L| by hand over the last 50 rows.
    table = read_run(run).train.tail(50)
    aux, task = np.abs(table.column("weighted/aux")), np.abs(table.column("weighted/task"))
    assert finding.evidence["median_share"] == pytest.approx(float(np.median(aux / (aux + task))))


def test_dominant_suggests_a_lower_weight(tmp_path: Path) -> None:
    from multiloss.report.synthetic import SyntheticLoss, fabricate_run

    def make(path: Path, weight: float) -> Path:
        losses = [SyntheticLoss("task", end=0.1, weight=weight), SyntheticLoss("depth", end=0.05)]
        return fabricate_run(path, losses, steps=runs.STEPS)

    (finding,) = dominant_losses(_ctx(make(tmp_path / "dom", 30.0)))
    assert finding.loss == "task"
    assert "lower its weight from 30" in finding.suggestion
    weight = float(finding.evidence["suggested_weight"])
    assert _median_share(make(tmp_path / "fixed", weight), "task") == pytest.approx(0.5, abs=0.01)


def test_nothing_for_one_loss_or_too_few_rows(tmp_path: Path) -> None:
    from multiloss.report.synthetic import SyntheticLoss, fabricate_run

    single = fabricate_run(tmp_path / "one", [SyntheticLoss("task")], steps=60)
    assert ignored_losses(_ctx(single)) == []
    assert dominant_losses(_ctx(single)) == []
    short = runs.tiny_weight(tmp_path / "short", steps=8)
    assert ignored_losses(_ctx(short)) == []


def test_zero_weight_gets_its_own_suggestion(tmp_path: Path) -> None:
    (finding,) = ignored_losses(_ctx(runs.tiny_weight(tmp_path / "zero", weight=0.0)))
    assert "its weight is 0" in finding.suggestion
