from __future__ import annotations

import pytest

from multiloss.report.advisor import FINDINGS, Finding, format_findings


def test_every_code_has_a_title_and_bad_codes_are_refused() -> None:
    for code, title in FINDINGS.items():
        assert Finding(code, "x", "m", "s").title == title
    with pytest.raises(ValueError, match=r"`code` of Finding must be one of \{'disconnected'"):
        Finding("bad", "x", "m", "s")


def test_text_forms() -> None:
    weak = Finding("ignored", "aux", "aux: tiny", "raise it", weak=True)
    assert str(weak) == "[ignored] aux: tiny (weak evidence) -> raise it"
    assert weak.key == ("ignored", "aux")
    text = format_findings([weak, Finding("conflict", "a|b", "a and b", "PCGrad")], run="r1")
    assert text.splitlines() == [
        "advisor (r1): 2 finding(s)",
        "  - [ignored] aux: tiny (weak evidence) -> raise it",
        "  - [conflict] a and b -> PCGrad",
    ]
    assert format_findings([]) == "advisor: no findings"
