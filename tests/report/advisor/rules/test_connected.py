from __future__ import annotations

from pathlib import Path

import numpy as np

from multiloss.report import read_run
from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.rules import disconnected_losses
from multiloss.report.advisor.rules.connected import is_constant
from multiloss.report.table import Table
from tests.report import runs


def _ctx(table: Table) -> Context:
    return Context.build(table, AdvisorConfig())


def test_zero_gradient_is_strong_evidence(tmp_path: Path) -> None:
    (finding,) = disconnected_losses(_ctx(read_run(runs.disconnected(tmp_path / "r")).train))
    assert finding.loss == "encoder/sparsity"
    assert not finding.weak
    assert "gradient norm was zero in 100%" in finding.message
    assert "use_aux_loss" in finding.suggestion
    assert ".detach()" in finding.suggestion


def test_constant_value_without_gradients_is_weak_evidence(tmp_path: Path) -> None:
    run = runs.disconnected(tmp_path / "r", grad_diagnostics=False)
    (finding,) = disconnected_losses(_ctx(read_run(run).train))
    assert finding.weak
    assert "stayed at 0 in all 200 logged rows" in finding.message


def test_a_detached_loss_whose_value_still_moves() -> None:
    # z-loss on detached logits: its value changes (the logits do) but no gradient flows.
    rows = [
        {"step": s, "loss/task": 1 / s, "loss/z": 1 + 0.1 * np.sin(s), "grad/norm/task": 1.0,
         "grad/norm/z": 0.0}
        for s in range(1, 31)
    ]  # fmt: skip
    (finding,) = disconnected_losses(_ctx(Table.from_rows(rows)))
    assert finding.loss == "z"
    assert "moves only through other losses' updates" in finding.message


def test_tiny_but_real_gradient_is_not_zero() -> None:
    rows = [
        {"step": s, "loss/task": 1 / s, "loss/z": 1 / s, "grad/norm/task": 1.0, "grad/norm/z": 1e-6}
        for s in range(1, 31)
    ]
    assert disconnected_losses(_ctx(Table.from_rows(rows))) == []


def test_is_constant() -> None:
    assert is_constant(np.array([2.0, 2.0, np.nan, 2.0]), 1e-6)
    assert not is_constant(np.array([2.0, 2.001]), 1e-6)
    assert not is_constant(np.array([2.0]), 1e-6)  # one value is no evidence
