"""Each spec example runs (a few steps, quietly), so the examples cannot rot."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("spec_*.py"))


def test_there_is_an_example_per_form() -> None:
    assert NAMES == [
        "spec_attach",
        "spec_automatic",
        "spec_list",
        "spec_maximize",
        "spec_port",
        "spec_scaled",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_example_runs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = importlib.import_module(name)
    results = module.main(steps=4, quiet=True)
    assert results
    assert all(isinstance(value, float) for value in results.values())
