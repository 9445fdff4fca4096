"""Kill -9 mid-training, resume in a new process: the result is bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import multiloss as ml
from multiloss.sinks import JSONLSink
from tests.training.models import TwoLoss, regression_batches

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, accumulate: int) -> None:
    reference = _run(
        str(tmp_path / "ref"), str(tmp_path / "ref.pt"), "--accumulate", str(accumulate)
    )
    assert reference.returncode == 0, reference.stderr

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            str(killed_dir),
            str(tmp_path / "unused.pt"),
            "--stall-at",
            "17",
            "--accumulate",
            str(accumulate),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while not (killed_dir / "ready").exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the training process never reached step 17"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # mid-training: checkpoint at 14, killed after 17
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    resumed = _run(
        str(killed_dir), str(tmp_path / "resumed.pt"), "--resume", "--accumulate", str(accumulate)
    )
    assert resumed.returncode == 0, resumed.stderr
    ours = torch.load(tmp_path / "resumed.pt", weights_only=True)
    theirs = torch.load(tmp_path / "ref.pt", weights_only=True)
    assert _same(ours["model"], theirs["model"])
    assert _same(ours["optimizer"], theirs["optimizer"])
    assert torch.equal(ours["rng"], theirs["rng"])

    # The log holds every step once: rows past the checkpoint were dropped on resume.
    rows = [json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [row["step"] for row in rows if row["kind"] == "train"]
    assert train_steps == [5, 10, 15, 20, 25, 30]
    reference_rows = [
        json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    ]
    ours_by_step = {r["step"]: r for r in rows if r["kind"] == "train"}
    for row in reference_rows:
        if row["kind"] == "train" and row["step"] > 15:
            assert ours_by_step[row["step"]]["loss/loss"] == row["loss/loss"]


# -- in one process: a fresh trainer (as after a crash) resumes from the run directory --------
class _CrashAfter(ml.Hook):
    """Stops training by raising after the given step, before that step's checkpoint."""

    def __init__(self, step: int) -> None:
        self.at = step

    def after_step(self) -> None:
        if self.trainer.step == self.at:
            raise KeyboardInterrupt(f"crash after step {self.at}")


def _rows(run_dir: Path, kind: str = "train") -> dict[int, dict[str, object]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row for row in map(json.loads, lines) if row["kind"] == kind}


def _losses(row: dict[str, object]) -> dict[str, object]:
    kept = ("loss/", "weighted/", "metric/", "total")
    return {k: v for k, v in row.items() if k.startswith(kept)}


def _trainer(run_dir: Path, hooks: tuple[ml.Hook, ...] = (), **kwargs: object) -> ml.Trainer:
    torch.manual_seed(0)
    model = TwoLoss()
    return ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=0.01),
        run_dir=run_dir,
        sinks=[JSONLSink()],
        hooks=hooks,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("stop", ["crash", "clean"])
def test_logged_rows_resume_exactly_between_log_steps(tmp_path: Path, stop: str) -> None:
    # log_every 4, checkpoints every 3: the run stops after step 5, mid-period. The resumed
    # run's rows at steps 8 and 12 average the same steps as the uninterrupted run's.
    data = regression_batches(7)
    options = {"log_every": 4, "checkpoint_every": 3}
    _trainer(tmp_path / "straight", **options).fit(data, steps=12)
    if stop == "crash":
        with pytest.raises(KeyboardInterrupt):
            _trainer(tmp_path / "cut", (_CrashAfter(5),), **options).fit(data, steps=12)
    else:
        _trainer(tmp_path / "cut", **options).fit(data, steps=5)
    _trainer(tmp_path / "cut", **options).fit(data, steps=12, resume=True)
    straight, resumed = _rows(tmp_path / "straight"), _rows(tmp_path / "cut")
    assert sorted(straight) == [4, 8, 12]
    # A clean stop writes the row of the steps it took (5), a crash writes none.
    assert sorted(resumed) == ([4, 5, 8, 12] if stop == "clean" else [4, 8, 12])
    for step in (4, 8, 12):
        assert _losses(resumed[step]) == _losses(straight[step]), step


def test_a_skipped_steps_event_appears_once_after_resume(tmp_path: Path) -> None:
    from tests.training.test_guard import Heads

    def trainer(hooks: tuple[ml.Hook, ...] = ()) -> ml.Trainer:
        model = Heads(set())
        return ml.Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.01),
            run_dir=tmp_path,
            sinks=[JSONLSink()],
            hooks=hooks,
            checkpoint_every=1,
            nonfinite="skip",
            log_every=1,
        )

    data = [torch.ones(3, 2)] * 8
    data[4] = torch.full((3, 2), float("nan"))  # the fifth step's losses are NaN
    with pytest.raises(KeyboardInterrupt):
        trainer((_CrashAfter(5),)).fit(data, steps=8)  # checkpoint at 4, crash after 5
    resumed = trainer()
    resumed.fit(data, steps=8, resume=True)
    events = list(_rows(tmp_path, "event").values())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    nonfinite = [row for row in map(json.loads, lines) if row.get("event") == "nonfinite"]
    assert len(nonfinite) == 1, nonfinite
    assert nonfinite[0]["step"] == 5
    assert resumed.skipped == 1
    assert any(event["event"] == "resume" for event in events)


def test_scheduled_learned_weights_are_trained_and_resume(tmp_path: Path) -> None:
    # Scheduled(Uncertainty()) creates the log-variances after its warm-up starts: they
    # still join the optimizer (and are trained), and a run resumed past that point loads.
    from multiloss.balancing import Scheduled, Uncertainty

    data = regression_batches(6)

    def trainer(run_dir: Path) -> ml.Trainer:
        return _trainer(run_dir, balancer=Scheduled(Uncertainty(), warmup=5), log_every=2)

    straight = trainer(tmp_path / "straight")
    straight.fit(data, steps=10)
    log_vars = straight.balancer.inner.log_vars  # type: ignore[union-attr]
    assert any(log_vars is p for g in straight.optimizer.param_groups for p in g["params"])
    assert log_vars.detach().abs().min() > 0  # moved from their start at 0
    trainer(tmp_path / "cut").fit(data, steps=6)
    resumed = trainer(tmp_path / "cut")
    resumed.fit(data, steps=10, resume=True)
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(resumed.balancer.inner.log_vars, log_vars)  # type: ignore[union-attr]
