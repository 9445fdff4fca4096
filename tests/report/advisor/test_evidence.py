from __future__ import annotations

import numpy as np
import pytest

from multiloss.report.advisor.evidence import (
    fmt_share,
    fmt_value,
    fraction,
    improvement,
    loss_shares,
)
from multiloss.report.table import Table


def test_improvement_compares_thirds_by_hand() -> None:
    values = np.array([4.0, 4.0, 5.0, 3.0, 3.0, 2.0, 2.0, 2.0, 1.0])
    # first third median 4, last third median 2: the loss halved.
    assert improvement(values, 1.0) == pytest.approx(0.5)
    assert improvement(values, -1.0) == pytest.approx(-0.5)  # maximized: falling is worse
    assert np.isnan(improvement(values[:5], 1.0))


def test_fraction_counts_only_finite_values() -> None:
    values = np.array([1.0, np.nan, -1.0, -2.0])
    assert fraction(values < 0, values) == pytest.approx(2 / 3)
    assert fraction(values < 0, np.full(3, np.nan)) == 0.0


def test_loss_shares_prefers_gradients() -> None:
    rows = [
        {"step": 1, "grad/share/a": 0.9, "grad/share/b": 0.1, "weighted/a": 1.0, "weighted/b": 1.0}
    ]
    shares, from_gradients = loss_shares(Table.from_rows(rows), ["a", "b"])
    assert from_gradients
    assert shares["a"].tolist() == [0.9]
    rows = [{"step": 1, "weighted/a": 3.0, "weighted/b": -1.0}]
    shares, from_gradients = loss_shares(Table.from_rows(rows), ["a", "b"])
    assert not from_gradients
    assert shares["b"].tolist() == [0.25]


def test_formatting() -> None:
    assert fmt_value(0.001) == "0.001"
    assert fmt_value(1.5e-5) == "1.50e-05"
    assert fmt_value(0) == "0"
    assert fmt_share(0.25) == "25.0%"
    assert fmt_share(0.0002) == "0.02%"
    assert fmt_share(0) == "0%"
