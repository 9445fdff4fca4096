"""Small runs and cheap options for the plot tests (the pixels are checked by the browser test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiloss.report import read_run
from multiloss.report.plots import PlotOptions
from multiloss.report.reader import Run
from tests.report import runs


@pytest.fixture
def options() -> PlotOptions:
    return PlotOptions(dpi=30, max_points=50)


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Run]:
    a = runs.tiny_weight(tmp_path / "a", steps=80, val_every=20)
    b = runs.healthy(tmp_path / "b", steps=60, val_every=20, moe_layers=2)
    return [read_run(a, name="a"), read_run(b, name="b")]
