"""The demo: trains, reports every loss, leaves a run directory."""

from __future__ import annotations

import json
from pathlib import Path

from multiloss.demo import run_demo
from multiloss.demo.run import format_loss_table


def test_short_demo_reports_every_loss_and_leaves_a_run_directory(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(
        steps=40, out=tmp_path / "run", progress=False, echo=lines.append, log_every=10
    )
    text = "\n".join(lines)
    for name in ("cls", "decoder/recon", "encoder/sparsity"):
        assert name in text
    assert "test accuracy" in text
    assert 0.0 <= result.test_accuracy <= 1.0
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/cls", "loss/decoder/recon", "loss/encoder/sparsity"} <= set(rows[0])
    assert list((run / "checkpoints").glob("*.pt"))
    assert list((run / "tensorboard").iterdir())


def test_loss_table_shares_sum_to_one() -> None:
    values = {
        "total": 3.0,
        "loss/a": 1.0,
        "weight/a": 1.0,
        "weighted/a": 1.0,
        "loss/b": 4.0,
        "weight/b": 0.5,
        "weighted/b": 2.0,
    }
    table = format_loss_table(values)
    assert "33.3%" in table
    assert "66.7%" in table
