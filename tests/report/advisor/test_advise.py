"""The advisor on one fabricated run per pathology: the right finding for the right loss."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from multiloss.report import advise, read_run
from multiloss.report.advisor import AdvisorConfig, Finding
from tests.report import runs

CASES: list[tuple[Callable[..., Path], str, str]] = [
    (runs.disconnected, "disconnected", "encoder/sparsity"),
    (runs.tiny_weight, "ignored", "aux"),
    (runs.opposed, "conflict", "adversary|task"),
    (runs.dominant, "dominant", "task"),
    (runs.rising, "stalled", "depth"),
    (runs.saturated, "saturated", "head/contrast"),
    (runs.collapsing_weight, "weight_collapse", "aux"),
    (runs.dead_experts, "dead_experts", "blocks.1.moe"),
]


def _keys(findings: list[Finding]) -> set[tuple[str, str]]:
    return {finding.key for finding in findings}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("make", "code", "loss"), CASES, ids=[c[1] for c in CASES])
def test_each_pathology_is_named(
    tmp_path: Path, make: Callable[..., Path], code: str, loss: str, seed: int
) -> None:
    findings = advise(make(tmp_path / "run", seed=seed))
    assert (code, loss) in _keys(findings)
    found = next(f for f in findings if f.key == (code, loss))
    assert found.suggestion
    assert loss.split("|")[0] in found.message
    assert found.step == runs.STEPS


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("make", [runs.healthy, runs.healthy_moe, runs.many_layers])
@pytest.mark.parametrize("grads", [True, False])
def test_healthy_runs_raise_nothing(
    tmp_path: Path, make: Callable[..., Path], grads: bool, seed: int
) -> None:
    assert advise(make(tmp_path / "run", seed=seed, grad_diagnostics=grads)) == []


def test_the_pathologies_do_not_spill_onto_healthy_losses(tmp_path: Path) -> None:
    # Only the sick loss is named: the task loss next to it gets nothing.
    for make in (runs.disconnected, runs.tiny_weight, runs.collapsing_weight, runs.saturated):
        findings = advise(make(tmp_path / make.__name__))
        assert all(finding.loss != "task" for finding in findings), findings


def test_weak_evidence_without_gradient_diagnostics(tmp_path: Path) -> None:
    findings = advise(runs.tiny_weight(tmp_path / "run", grad_diagnostics=False))
    assert [(f.code, f.loss, f.weak) for f in findings] == [("ignored", "aux", True)]
    assert "estimated from weighted-loss magnitudes" in findings[0].suggestion
    # A disconnected loss is still found, from its constant value.
    findings = advise(runs.disconnected(tmp_path / "d", grad_diagnostics=False))
    assert [(f.code, f.weak) for f in findings] == [("disconnected", True)]


def test_a_disconnected_loss_is_not_also_reported_as_ignored_or_saturated(tmp_path: Path) -> None:
    findings = advise(runs.disconnected(tmp_path / "run"))
    assert [f.code for f in findings] == ["disconnected"]


def test_findings_repeated_over_a_group_are_merged(tmp_path: Path) -> None:
    run = runs.many_layers(tmp_path / "run", layers=6, dead_experts={i: [1] for i in range(6)})
    findings = advise(run)
    dead = [f for f in findings if f.code == "dead_experts"]
    assert len(dead) == 6  # layers are not losses: each layer stays its own finding
    findings = advise(runs.many_layers(tmp_path / "tiny", layers=5), min_share=0.2)
    ignored = [f for f in findings if f.code == "ignored"]
    assert [(f.loss, f.evidence["count"]) for f in ignored] == [("*/balance", 5)]
    assert "5 losses (blocks.0.moe/balance, blocks.1.moe/balance" in ignored[0].message


def test_thresholds_are_options(tmp_path: Path) -> None:
    run = runs.tiny_weight(tmp_path / "run", weight=0.3)
    assert advise(run) == []  # about 12% of the update: above the default 1%
    assert ("ignored", "aux") in _keys(advise(run, min_share=0.2))
    assert ("ignored", "aux") in _keys(advise(run, AdvisorConfig(min_share=0.2)))
    with pytest.raises(TypeError, match="unknown advisor option 'min_shares'"):
        advise(run, min_shares=0.1)


def test_accepts_a_run_and_short_runs_give_nothing(tmp_path: Path) -> None:
    run = read_run(runs.tiny_weight(tmp_path / "run"))
    assert ("ignored", "aux") in _keys(advise(run))
    short = runs.tiny_weight(tmp_path / "short", steps=5)
    assert advise(short) == []  # fewer rows than min_rows: no evidence yet


def test_findings_are_ordered_by_code(tmp_path: Path) -> None:
    findings = advise(runs.opposed(tmp_path / "run"))
    order = ["disconnected", "saturated", "ignored", "dominant", "conflict", "stalled"]
    codes = [f.code for f in findings]
    assert codes == sorted(codes, key=order.index)


def test_bad_arguments_name_the_parameter(tmp_path: Path) -> None:
    import multiloss.report as mr

    with pytest.raises(
        TypeError,
        match=r"`run` of advise must be a run directory \(a str or a "
        r"Path\) or a Run; got 123 \(int\)",
    ):
        mr.advise(123)  # type: ignore[arg-type]
    with pytest.raises(
        FileNotFoundError,
        match=r"`run` of advise must be an existing run "
        r"directory; got '.*nope' \(nothing there\)",
    ):
        mr.advise(tmp_path / "nope")
    with pytest.raises(TypeError, match=r"`config` of advise must be an AdvisorConfig or None"):
        mr.advise(tmp_path, config="x")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"`config` of AdvisorHook must be an AdvisorConfig or "
        r"None; got 'x' \(str\)",
    ):
        mr.AdvisorHook(config="x")  # type: ignore[arg-type]
