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
