from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from multiloss.report import read_run
from multiloss.report.advisor import Finding
from multiloss.report.html import png_size, render_page
from multiloss.report.plots import Plot
from tests.report import runs


def _png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", width, height) + b"rest"


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    run = read_run(runs.healthy(tmp_path / "h", steps=30))
    plots = [Plot("p1", "Losses", "<b>title</b>", _png(40, 20), "a < b", ["note & more"])]
    finding = Finding("ignored", "aux<script>", "msg <i>", "fix &", weak=True)
    html = render_page([run], plots, {run.name: [finding]}, problems=["family failed"])
    assert html.startswith("<!DOCTYPE html>")
    # No network: every src/href is a data URI or an in-page anchor.
    for target in re.findall(r"(?:src|href)='([^']*)'", html):
        assert target.startswith(("data:", "#")), target
    assert "<script" not in html
    assert "http" not in html
    assert "&lt;b&gt;title&lt;/b&gt;" in html
    assert "aux&lt;script&gt;" in html
    assert "width='40' height='20'" in html
    assert "(weak evidence)" in html
    assert "family failed" in html


def test_no_findings_no_advisor_and_no_plots(tmp_path: Path) -> None:
    run = read_run(runs.healthy(tmp_path / "h", steps=30))
    assert "No findings" in render_page([run], [], {run.name: []})
    html = render_page([run], [], None)
    assert "advisor was not run" in html
    assert "Nothing to plot yet" in html


def test_png_size_rejects_other_data() -> None:
    assert png_size(_png(7, 3)) == (7, 3)
    with pytest.raises(ValueError, match="`png` must start with a PNG signature"):
        png_size(b"GIF89a" + b"\x00" * 30)
