"""Sinks: files a person (or a report) can read, and a progress bar."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from tqdm.auto import tqdm

from multiloss.sinks import CSVSink, JSONLSink, ProgressBar, RunInfo, TensorBoardSink
from tests.training.models import make_trainer, regression_batches


def test_trainer_run_dir_gets_jsonl_tensorboard_and_run_json(tmp_path: Path) -> None:
    trainer = make_trainer(run_dir=tmp_path, sinks=None, log_every=2)
    trainer.fit(regression_batches(4), steps=4, val_data=regression_batches(1, seed=3))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    kinds = [row["kind"] for row in rows]
    assert kinds == ["train", "train", "val"]
    train = rows[0]
    for key in (
        "step",
        "epoch",
        "time",
        "total",
        "lr",
        "time/step",
        "skipped",
        "loss/mse",
        "weight/mse",
        "weighted/mse",
        "loss/l2",
        "weight/l2",
        "weighted/l2",
        "metric/active",
    ):
        assert key in train, key
    assert json.loads((tmp_path / "run.json").read_text())["model"] == "TwoLoss"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss/mse", "weighted/l2", "weight/l2", "total", "val/loss/mse"} <= set(tags)
    assert [event.step for event in events.Scalars("loss/mse")] == [2, 4]


def test_jsonl_writes_null_for_non_finite(tmp_path: Path) -> None:
    sink = JSONLSink(tmp_path / "m.jsonl")
    sink.open(RunInfo(None))
    sink.write({"kind": "train", "step": 1, "total": float("nan")})
    sink.close()
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {
        "kind": "train",
        "step": 1,
        "total": None,
    }


def test_jsonl_fresh_run_replaces_and_resume_truncates(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 5}\n{"kind": "train", "step": 10}\n{"kind": "tr')
    sink = JSONLSink(path)
    sink.open(RunInfo(None, start_step=5, resumed=True))
    sink.write({"kind": "train", "step": 6})
    sink.close()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [5, 6]
    sink = JSONLSink(path)
    sink.open(RunInfo(None))
    sink.close()
    assert path.read_text() == ""


def test_sinks_without_a_destination_are_clear_errors() -> None:
    for sink in (JSONLSink(), CSVSink(), TensorBoardSink()):
        with pytest.raises(
            ValueError, match=r"needs `(path|log_dir)` or a trainer with a `run_dir`"
        ):
            sink.open(RunInfo(None))
    with pytest.raises(RuntimeError, match=r"write\(\) before open\(\)"):
        JSONLSink().write({})


def test_progress_bar_shows_total_and_largest_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    bar = ProgressBar(top=1, disable=False)
    monkeypatch.setattr("multiloss.sinks.progress.sys.stderr", stream)
    bar.open(RunInfo(None, total_steps=10))
    bar.advance(3)
    bar.write({"kind": "train", "step": 3, "total": 1.5, "weighted/a": 0.2, "weighted/b": -1.3})
    bar.write({"kind": "event", "step": 3, "event": "advice", "message": "loss 'a' is ignored"})
    bar._bar.refresh()
    bar.close()
    text = stream.getvalue()
    assert "total=1.5" in text
    assert "b=-1.3" in text
    assert "a=0.2" not in text  # only the top 1 term
    assert "[advice] loss 'a' is ignored" in text
    assert isinstance(tqdm, type)


def test_csv_resume_keeps_rows_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    sink = CSVSink(path)
    sink.open(RunInfo(None))
    for step in (1, 2, 3):
        sink.write({"kind": "train", "step": step, "loss/a": float(step)})
    sink.close()
    again = CSVSink(path)
    again.open(RunInfo(None, start_step=2, resumed=True))
    again.write({"kind": "train", "step": 3, "loss/a": 30.0})
    again.close()
    lines = path.read_text().splitlines()
    assert lines == ["kind,step,loss/a", "train,1,1.0", "train,2,2.0", "train,3,30.0"]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: CSVSink(path=123), TypeError, r"`path` of CSVSink must be a path .*; got 123"),
        (lambda: JSONLSink(path=1.5), TypeError, r"`path` of JSONLSink must be a path"),
        (lambda: TensorBoardSink(log_dir=5), TypeError, r"`log_dir` of TensorBoardSink must be a"),
        (lambda: CSVSink(rewrite_every="x"), TypeError, r"`rewrite_every` of CSVSink must be an"),
        (lambda: CSVSink(rewrite_every=0), ValueError, r"`rewrite_every` of CSVSink must be >= 1"),
        (lambda: ProgressBar(disable="x"), TypeError, r"`disable` of ProgressBar must be a bool"),
    ],
)
def test_bad_arguments_name_the_parameter(build, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        build()
