"""The ``--moe`` demo: the table it prints, and balancing visibly lowering the load spread."""

from __future__ import annotations

import pytest

from multiloss.demo.moe import format_balance_table, run_moe_demo


def test_table_lists_every_expert_metric_and_run() -> None:
    diagnostics = {
        label: {
            **{f"load/{i}": 0.25 for i in range(4)},
            "cv": 0.0,
            "max_vio": 0.0,
            "dead_fraction": 0.0,
            "router_entropy": 1.0,
        }
        for label in ("none", "switch")
    }
    table = format_balance_table(diagnostics, {"none": 0.5, "switch": 0.75})
    lines = table.splitlines()
    assert lines[0].split() == ["none", "switch"]
    assert [line.split()[0] for line in lines[1:]] == [
        "load/0",
        "load/1",
        "load/2",
        "load/3",
        "cv",
        "max_vio",
        "dead_fraction",
        "router_entropy",
        "test",
    ]
    assert lines[1].split()[1:] == ["25.0%", "25.0%"]
    assert lines[-1].split()[-2:] == ["50.0%", "75.0%"]


@pytest.mark.slow
def test_balancing_lowers_the_coefficient_of_variation_of_expert_load() -> None:
    printed: list[str] = []
    result = run_moe_demo(steps=80, echo=lambda *parts: printed.append(" ".join(map(str, parts))))
    cv = {label: values["cv"] for label, values in result.diagnostics.items()}
    assert cv["switch 0.01"] < 0.9 * cv["no balancing"]
    assert cv["bias 1e-3"] < 0.9 * cv["no balancing"]
    assert any(line.startswith("cv ") for line in "\n".join(printed).splitlines())
    assert set(result.accuracy) == {"no balancing", "switch 0.01", "bias 1e-3"}
