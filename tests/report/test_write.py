from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from multiloss.report import AdvisorConfig, PlotOptions, write_report
from multiloss.report.plots import PLOT_FAMILIES
from multiloss.report.write import _draw, default_out_dir
from tests.report import runs


def test_single_run_default_location(tmp_path: Path) -> None:
    run = runs.tiny_weight(tmp_path / "run", steps=60)
    page = write_report(run, options=PlotOptions(dpi=30))
    assert page == run / "report" / "index.html"
    pngs = sorted((run / "report" / "plots").glob("*.png"))
    assert pngs
    assert all(p.stat().st_size > 500 for p in pngs)
    assert page.read_text().count("data:image/png;base64,") == len(pngs)
    findings = json.loads((run / "report" / "findings.json").read_text())
    assert [(f["finding"], f["loss"]) for f in findings["run"]] == [("ignored", "aux")]


def test_several_runs_and_advisor_options(tmp_path: Path) -> None:
    a = runs.tiny_weight(tmp_path / "a", steps=60)
    b = runs.healthy(tmp_path / "b", steps=60)
    page = write_report([a, b], tmp_path / "cmp", options=PlotOptions(dpi=30), advisor=False)
    assert not (tmp_path / "cmp" / "findings.json").exists()
    assert "advisor was not run" in page.read_text()
    strict = AdvisorConfig(min_share=0.5)
    write_report([b], tmp_path / "cmp2", options=PlotOptions(dpi=30), advisor=strict)
    saved = json.loads((tmp_path / "cmp2" / "findings.json").read_text())
    assert set(saved) == {"b"}
    assert saved["b"]


def test_default_out_dir() -> None:
    assert default_out_dir(["runs/x"]) == Path("runs/x/report")
    assert default_out_dir(["a", "b"]) == Path("report")


def test_a_failing_family_is_reported_not_fatal(tmp_path: Path) -> None:
    run = runs.healthy(tmp_path / "h", steps=30)
    from multiloss.report import read_run

    def broken(runs_: object, options: object) -> list[object]:
        raise RuntimeError("boom")

    with pytest.warns(RuntimeWarning, match="broken failed: RuntimeError: boom"):
        plots, problems = _draw([read_run(run)], PlotOptions(dpi=30), [broken, PLOT_FAMILIES[0]])  # type: ignore[list-item]
    assert [p.key for p in plots] == ["overview-1"]
    assert problems == ["broken failed: RuntimeError: boom"]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="each of `run_dirs` of write_report must be an existing run dir"
    ):
        write_report(tmp_path / "missing")
    with pytest.raises(
        ValueError, match="`run_dirs` of write_report must name at least one run directory"
    ):
        write_report([])


def test_page_stays_small_for_a_long_run(tmp_path: Path) -> None:
    run = runs.healthy(tmp_path / "long", steps=1500, moe_layers=2, val_every=100)
    page = write_report(run, options=PlotOptions(dpi=40))
    log = os.path.getsize(run / "metrics.jsonl")
    assert os.path.getsize(page) < min(log, 1_500_000)


def test_bad_arguments_name_the_parameter(tmp_path: Path) -> None:
    run = runs.healthy(tmp_path / "a", steps=20)
    out = tmp_path / "out"
    with pytest.raises(
        TypeError,
        match=r"`options` of write_report must be a PlotOptions or None; "
        r"got 'x' \(str\)",
    ):
        write_report(run, out, options="x")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"`advisor` of write_report must be True, False or an "
        r"AdvisorConfig; got 'x'",
    ):
        write_report(run, out, advisor="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`title` of write_report must be a str or None; got 3"):
        write_report(run, out, title=3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"`run_dirs` of write_report must be a run directory or "
        r"a list of them; got 123 \(int\)",
    ):
        write_report(123, out)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"each of `run_dirs` of write_report must be a path"):
        write_report([run, 5], out)  # type: ignore[list-item]
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        NotADirectoryError,
        match=r"`out_dir` of write_report must be a directory "
        r"\(created if missing\); got .*file', which is a file",
    ):
        write_report(run, out_dir=tmp_path / "file")
    assert not out.exists()  # nothing was written before the checks
