from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import multiloss.report as mr


def test_every_public_name_resolves() -> None:
    for name in mr.__all__:
        assert getattr(mr, name) is not None
    assert set(mr.__all__) <= set(dir(mr))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = mr.nothing  # type: ignore[attr-defined]


def test_registering_the_command_does_not_load_matplotlib() -> None:
    src = Path(__file__).parents[2] / "src"
    code = (
        "import sys; import multiloss.report.cli; import multiloss.report as mr; mr.AdvisorHook;"
        "print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src), "PATH": ""},
    )
    assert result.stdout.strip() == "False"
