"""Routing diagnostics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from multiloss.layers.moe.cache import RoutingCache
from multiloss.layers.moe.diagnostics import routing_diagnostics


def _cache(routed: list[int], kept: list[int], probs: torch.Tensor, valid: torch.Tensor | None):
    return RoutingCache(
        logits=probs.log(),
        probs=probs,
        chosen=torch.zeros(probs.shape[0], 1, dtype=torch.long),
        valid=valid,
        routed=torch.tensor(routed),
        kept=torch.tensor(kept),
        sequence_length=None,
        global_counts=None,
    )


def test_load_cv_max_vio_dropped_dead_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    out = routing_diagnostics(_cache([6, 2, 0, 0], [4, 2, 0, 0], probs, None), None)
    values = {key: float(value) for key, value in out.items()}
    load = [0.75, 0.25, 0.0, 0.0]
    mean = 0.25
    std = math.sqrt(sum((v - mean) ** 2 for v in load) / 4)
    assert [values[f"load/{i}"] for i in range(4)] == pytest.approx(load)
    assert values["cv"] == pytest.approx(std / mean)
    assert values["max_vio"] == pytest.approx((0.75 - mean) / mean)
    assert values["dropped_fraction"] == pytest.approx(2 / 8)
    assert values["dead_fraction"] == pytest.approx(0.5)
    assert values["router_entropy"] == pytest.approx((math.log(2) + math.log(4)) / 2)


def test_perfect_balance_has_zero_cv_and_violation() -> None:
    probs = torch.full((3, 3), 1 / 3)
    out = routing_diagnostics(_cache([2, 2, 2], [2, 2, 2], probs, None), torch.zeros(3))
    assert float(out["cv"]) == pytest.approx(0.0, abs=1e-7)
    assert float(out["max_vio"]) == pytest.approx(0.0, abs=1e-6)
    assert sorted(k for k in out if k.startswith("bias/")) == ["bias/0", "bias/1", "bias/2"]


def test_entropy_skips_padding() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    out = routing_diagnostics(_cache([1, 0], [1, 0], probs, torch.tensor([True, False])), None)
    assert float(out["router_entropy"]) == pytest.approx(0.0)
