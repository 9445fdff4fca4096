"""The `multiloss` command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from multiloss.cli import main


def test_demo_help_documents_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for option in ("--steps", "--out", "--seed", "--batch-size", "--no-progress"):
        assert option in text


def test_demo_runs_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--steps", "20", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").exists()


def test_bad_option_values_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert "must be a positive integer; got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_on_two_processes(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--nproc", "2", "--steps", "20", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capfd.readouterr().out
    assert "2 processes" in out
    assert out.count("test accuracy") == 1  # rank 0 alone prints
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == len(set(rows))  # written once, not once per rank
