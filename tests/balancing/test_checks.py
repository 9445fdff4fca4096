"""Deferred device checks: immediate on the CPU, read once at the next check elsewhere."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing._checks import (
    DeferredChecks,
    check_representation,
    check_scale,
    check_shared,
)


def test_cpu_flags_are_read_at_once() -> None:
    checks = DeferredChecks()
    checks.add("ok", torch.tensor(False), lambda: "unused")
    assert len(checks) == 0
    with pytest.raises(RuntimeError, match="boom"):
        checks.add("bad", torch.tensor(True), lambda: "boom", RuntimeError)


def test_pending_flags_are_or_ed_and_raised_by_run() -> None:
    checks = DeferredChecks()
    # What add() keeps for a flag on an accelerator (here built by hand on the CPU).
    checks._flags["neg"] = (torch.tensor(False), lambda: "a loss went negative", ValueError)
    previous = checks._flags["neg"]
    checks._flags["neg"] = (previous[0] | torch.tensor(True), previous[1], previous[2])
    with pytest.raises(ValueError, match=r"a loss went negative .*deferred check"):
        checks.run()
    assert len(checks) == 0
    checks.run()  # nothing pending: no error, no sync


def test_scale_numbers_and_tensors() -> None:
    assert check_scale(2, "Sum.apply") == 2.0
    scale = torch.tensor(0.5)
    assert check_scale(scale, "Sum.apply") is scale  # kept as the tensor (AMP's, on the device)
    with pytest.raises(
        ValueError, match=r"^`scale` of Sum\.apply must be a finite float > 0; got nan$"
    ):
        check_scale(float("nan"), "Sum.apply")
    with pytest.raises(ValueError, match=r"`scale` of Sum\.apply must be finite and > 0; got"):
        check_scale(torch.tensor(float("inf")), "Sum.apply")
    with pytest.raises(TypeError, match=r"`scale` of X\.backward must be .* got None"):
        check_scale(None, "X.backward")


def test_a_scale_tensor_off_the_cpu_is_not_read() -> None:
    # A meta tensor has no value: reading it would fail, as reading a GPU one would wait.
    scale = torch.empty((), device="meta")
    assert check_scale(scale, "Sum.apply") is scale


def test_shared_and_representation() -> None:
    w = torch.ones(2, requires_grad=True)
    assert check_shared(None, "Sum.apply") is None
    assert check_shared(iter([w]), "Sum.apply") == (w,)
    with pytest.raises(TypeError, match=r"`shared` of Sum\.apply .* got \{'w': 1\}"):
        check_shared({"w": 1}, "Sum.apply")
    assert check_representation(w, "Sum.apply") is w
    with pytest.raises(TypeError, match=r"`representation` of Sum\.apply must be a tensor"):
        check_representation([w], "Sum.apply")
