"""The live advisor against a fake trainer that records ``event`` calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from multiloss.report.advisor import AdvisorHook
from tests.report import runs


class FakeTrainer:
    def __init__(self, run_dir: Path | None = None, step: int = 0) -> None:
        self.run_dir = run_dir
        self.step = step
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def event(self, event: str, message: str, **fields: Any) -> None:
        self.events.append((event, message, fields))


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _feed(hook: AdvisorHook, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        hook.on_log(row)


def test_reports_each_finding_once_with_the_contract_fields(tmp_path: Path) -> None:
    trainer = FakeTrainer()
    hook = AdvisorHook(every=10)
    hook.trainer = trainer
    _feed(hook, _rows(runs.tiny_weight(tmp_path / "r", val_every=20)))
    assert [(e, f["finding"], f["loss"]) for e, _, f in trainer.events] == [
        ("advice", "ignored", "aux")
    ]
    _, message, fields = trainer.events[0]
    assert message.startswith("aux: share of the update stayed below 1%")
    assert "raise its weight from 0.001" in fields["suggestion"]
    assert [f.key for f in hook.findings] == [("ignored", "aux")]


def test_a_cleared_finding_is_reported_again_when_it_returns(tmp_path: Path) -> None:
    trainer = FakeTrainer()
    hook = AdvisorHook(every=1, window=10)
    hook.trainer = trainer
    bad = _rows(runs.tiny_weight(tmp_path / "bad"))[:40]
    good = list(_rows(runs.healthy(tmp_path / "good"))[40:60])
    later = [{**row, "step": row["step"] + 40} for row in bad[20:40]]
    _feed(hook, bad)
    assert len(trainer.events) == 1
    _feed(hook, good)
    assert hook.findings == []
    assert len(trainer.events) == 1
    _feed(hook, later)
    assert [f["finding"] for _, _, f in trainer.events] == ["ignored", "ignored"]


def test_validation_rows_are_ignored() -> None:
    hook = AdvisorHook(every=1)
    hook.on_log({"kind": "val", "step": 1, "loss/a": 1.0})
    hook.on_log({"step": 1, "loss/a": 1.0, "total": 1.0})  # no kind and no weights: not train
    hook.on_log({"step": 2, "loss/a": 1.0, "weight/a": 1.0})  # no kind, but a training row
    assert "rows=1" in repr(hook)


def test_resume_reads_the_run_directory_and_keeps_reported_findings(tmp_path: Path) -> None:
    run = runs.tiny_weight(tmp_path / "r")
    rows = _rows(run)
    first = AdvisorHook(every=10)
    first.trainer = FakeTrainer()
    _feed(first, rows[:100])
    assert len(first.trainer.events) == 1
    state = first.state_dict()

    second = AdvisorHook(every=10)
    second.trainer = FakeTrainer(run_dir=run, step=150)
    second.load_state_dict(state)
    second.before_train()  # preloads the logged rows up to the resume step
    assert "rows=150" in repr(second)
    fresh = AdvisorHook()
    fresh.trainer = FakeTrainer(run_dir=run, step=0)
    fresh.before_train()  # a fresh run ignores an old log
    assert "rows=0" in repr(fresh)
    _feed(second, [{**row, "step": row["step"] + runs.STEPS} for row in rows[100:120]])
    assert second.trainer.events == []  # already reported before the resume


def test_memory_stays_bounded_and_covers_the_whole_run() -> None:
    hook = AdvisorHook(every=10_000, max_rows=100)
    _feed(hook, [{"kind": "train", "step": s, "loss/a": 1.0} for s in range(1, 1001)])
    assert len(hook._rows) <= 100
    steps = [row["step"] for row in hook._rows]
    assert steps[0] == 1
    assert steps[-1] == 1000
    assert steps == sorted(steps)


def test_without_a_trainer_it_still_evaluates(tmp_path: Path) -> None:
    hook = AdvisorHook(every=1000)
    _feed(hook, _rows(runs.tiny_weight(tmp_path / "r")))
    assert [f.key for f in hook.check()] == [("ignored", "aux")]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every": 0}, ValueError, "`every` of AdvisorHook must be >= 1; got 0"),
        ({"max_rows": 10}, ValueError, "`max_rows` of AdvisorHook must be >= 100; got 10"),
        ({"min_sahre": 0.1}, TypeError, "unknown advisor option 'min_sahre'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        AdvisorHook(**kwargs)
