"""Fixtures of the report tests: fabricated run directories, one per pathology."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report import runs


@pytest.fixture
def healthy_run(tmp_path: Path) -> Path:
    return runs.healthy(tmp_path / "healthy", val_every=20)


@pytest.fixture
def moe_run(tmp_path: Path) -> Path:
    return runs.dead_experts(tmp_path / "moe", val_every=20)
