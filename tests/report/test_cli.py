from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from multiloss.report.cli import add_report_command, main
from tests.report import runs


def test_main_writes_the_report_and_prints_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = runs.tiny_weight(tmp_path / "run", steps=60)
    assert main([str(run), "--out", str(tmp_path / "out"), "--dpi", "30"]) == 0
    out = capsys.readouterr().out
    assert "advisor (run): 1 finding(s)" in out
    assert "[ignored] aux" in out
    assert f"report written to {tmp_path / 'out' / 'index.html'}" in out
    assert (tmp_path / "out" / "index.html").is_file()


def test_several_runs_no_advice_and_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = runs.healthy(tmp_path / "a", steps=40)
    b = runs.healthy(tmp_path / "b", steps=40, seed=1)
    options = [
        "--no-advice",
        "--group",
        "never",
        "--max-points",
        "100",
        "--smoothing",
        "0",
        "--dpi",
        "30",
    ]
    args = [str(a), str(b), "--out", str(tmp_path / "o"), *options, "--title", "A vs B"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "advisor" not in out
    assert "<title>A vs B</title>" in (tmp_path / "o" / "index.html").read_text()


def test_errors_exit_1_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 1
    assert (
        "multiloss report: error: RUN_DIR must be an existing run directory; got "
        in capsys.readouterr().err
    )
    run = runs.healthy(tmp_path / "a", steps=40)
    assert main([str(run), "--max-points", "3"]) == 1
    assert "`--max-points` must be >= 10; got 3" in capsys.readouterr().err
    assert main([str(run), "--advice-window", "1"]) == 1
    assert "error: `--advice-window` must be >= " in capsys.readouterr().err
    assert main([str(run), "--advice-window", "0"]) == 1
    assert "AdvisorConfig" not in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([str(run), "--out", str(tmp_path / "file")]) == 1
    assert "error: `--out` must be a directory (created if missing)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(run), "--group", "bogus"])


def test_plugs_into_a_parent_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="multiloss")
    add_report_command(parser.add_subparsers(dest="command"))
    run = runs.healthy(tmp_path / "a", steps=40)
    args = parser.parse_args(["report", str(run), "--out", str(tmp_path / "o"), "--dpi", "30"])
    assert args.command == "report"
    assert args.handler(args) == 0
    assert (tmp_path / "o" / "index.html").is_file()
