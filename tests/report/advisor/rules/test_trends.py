from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multiloss.report import read_run
from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.rules import saturated_losses, stalled_losses
from multiloss.report.synthetic import SyntheticLoss, fabricate_run
from multiloss.report.table import Table
from tests.report import runs


def _ctx(path: Path) -> Context:
    return Context.build(read_run(path).train, AdvisorConfig())


def test_rising_loss_while_task_falls(tmp_path: Path) -> None:
    (finding,) = stalled_losses(_ctx(runs.rising(tmp_path / "r")))
    assert finding.loss == "depth"
    assert "worse" in finding.message
    assert "task improved" in finding.message
    assert finding.evidence["improvement"] < -0.05


def test_flat_task_loss_is_stalled_but_a_flat_module_loss_is_not(tmp_path: Path) -> None:
    def make(name: str) -> Path:
        losses = [
            SyntheticLoss("task", end=0.1),
            SyntheticLoss(name, start=1.0, end=1.0, noise=0.01),
        ]
        return fabricate_run(tmp_path / name.replace("/", "_"), losses, steps=200)

    assert [f.loss for f in stalled_losses(_ctx(make("depth")))] == ["depth"]
    # A balance loss sitting at its floor is expected to be flat.
    assert stalled_losses(_ctx(make("blocks.0.moe/balance"))) == []


def test_maximized_loss_rising_is_progress() -> None:
    rows = [
        {"step": s, "loss/task": 2.0 / s, "weight/task": 1.0, "loss/margin": 1 - 1 / s,
         "weight/margin": -0.5}
        for s in range(1, 61)
    ]  # fmt: skip
    ctx = Context.build(Table.from_rows(rows), AdvisorConfig(window=60))
    assert stalled_losses(ctx) == []
    falling = [{**row, "loss/margin": 1 / row["step"]} for row in rows]
    (finding,) = stalled_losses(Context.build(Table.from_rows(falling), AdvisorConfig(window=60)))
    assert finding.loss == "margin"


def test_nothing_stalls_when_nothing_improves() -> None:
    rows = [{"step": s, "loss/a": 1.0 + 0.01 * (s % 2), "loss/b": 2.0} for s in range(1, 61)]
    assert stalled_losses(Context.build(Table.from_rows(rows), AdvisorConfig())) == []


def test_saturated_loss(tmp_path: Path) -> None:
    (finding,) = saturated_losses(_ctx(runs.saturated(tmp_path / "s")))
    assert finding.loss == "head/contrast"
    assert finding.evidence["start"] == pytest.approx(2.3, rel=0.05)
    assert "not learning" in finding.message


def test_saturated_needs_the_whole_run_flat(tmp_path: Path) -> None:
    # Falls by 10% early, then flat: it learned something, so it is not stuck at its start.
    values = np.concatenate([np.linspace(1.0, 0.9, 20), np.full(80, 0.9)])
    rows = [{"step": i + 1, "loss/a": float(v)} for i, v in enumerate(values)]
    assert saturated_losses(Context.build(Table.from_rows(rows), AdvisorConfig())) == []
    assert saturated_losses(_ctx(runs.healthy(tmp_path / "h"))) == []
