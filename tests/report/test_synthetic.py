from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multiloss.report import read_run
from multiloss.report.synthetic import SyntheticLoss, fabricate_run


def test_diagnostics_are_consistent(tmp_path: Path) -> None:
    losses = [
        SyntheticLoss("a", noise=0.0),
        SyntheticLoss("b", weight=0.3),
        SyntheticLoss("c", opposed_to="a", noise=0.0),
    ]
    run = read_run(fabricate_run(tmp_path / "r", losses, steps=30, moe_layers=1))
    table = run.train
    shares = sum(table.column(f"grad/share/{n}") for n in run.losses)
    np.testing.assert_allclose(shares, 1.0, rtol=1e-9)  # shares of the update sum to one
    np.testing.assert_allclose(table.column("grad/cos/a|c"), -1.0, atol=1e-9)
    np.testing.assert_allclose(table.column("weighted/b"), 0.3 * table.column("loss/b"), rtol=1e-12)
    loads = sum(table.column(f"metric/blocks.0.moe/load/{e}") for e in range(8))
    np.testing.assert_allclose(loads, 1.0)
    assert run.losses == ["a", "b", "c", "blocks.0.moe/balance"]


def test_disconnected_loss_is_constant_without_gradient(tmp_path: Path) -> None:
    run = read_run(
        fabricate_run(
            tmp_path / "r",
            [SyntheticLoss("a"), SyntheticLoss("d", start=3.0, connected=False)],
            steps=20,
        )
    )
    assert set(run.train.column("loss/d")) == {3.0}
    assert set(run.train.column("grad/norm/d")) == {0.0}


def test_rows_logging_and_validation(tmp_path: Path) -> None:
    run = read_run(
        fabricate_run(
            tmp_path / "r",
            [SyntheticLoss("a")],
            steps=100,
            log_every=10,
            val_every=50,
            partial_tail=True,
        )
    )
    assert run.train.steps.tolist() == list(range(10, 101, 10))
    assert run.val.steps.tolist() == [50, 100]
    assert run.partial


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda p: fabricate_run(p, []),
            ValueError,
            "`losses` of fabricate_run must hold at least one",
        ),
        (
            lambda p: fabricate_run(p, [SyntheticLoss("a"), SyntheticLoss("a")]),
            ValueError,
            "distinct names",
        ),
        (
            lambda p: fabricate_run(p, [SyntheticLoss("a", opposed_to="zz")]),
            ValueError,
            "`opposed_to` of SyntheticLoss 'a' must name another loss",
        ),
        (
            lambda p: fabricate_run(p, [SyntheticLoss("a")], steps=0),
            ValueError,
            "`steps` of fabricate_run must be >= 1",
        ),
        (
            lambda p: SyntheticLoss(" a"),
            ValueError,
            "`name` of SyntheticLoss must be a non-empty string",
        ),
        (
            lambda p: SyntheticLoss("a", noise=-1.0),
            ValueError,
            "`noise` of SyntheticLoss 'a' must be >= 0.0",
        ),
        (
            lambda p: SyntheticLoss("a", weight="x"),
            TypeError,
            "`weight` of SyntheticLoss 'a' must be a float",
        ),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments(tmp_path: Path, call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(tmp_path / "r")  # type: ignore[operator]
