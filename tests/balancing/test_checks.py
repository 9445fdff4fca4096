"""Deferred device checks: immediate on the CPU, read once at the next check elsewhere."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing._checks import DeferredChecks


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
