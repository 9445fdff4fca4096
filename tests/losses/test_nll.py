from __future__ import annotations

import math

import pytest
import torch

from multiloss.losses import NLL, TargetMismatchError


def test_matches_a_naive_loop() -> None:
    log_probs, target = torch.randn(5, 4).log_softmax(1), torch.tensor([3, 0, 1, 1, 2])
    expected = -sum(float(log_probs[i, int(target[i])]) for i in range(5)) / 5
    assert float(NLL()(log_probs, target)) == pytest.approx(expected, rel=1e-6)


def test_class_weight() -> None:
    log_probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()
    target = torch.tensor([0, 1])
    value = NLL(class_weight=torch.tensor([1.0, 3.0]))(log_probs, target)
    expected = -(1.0 * math.log(0.5) + 3.0 * math.log(0.1)) / (1.0 + 3.0)
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_class_dim_last() -> None:
    log_probs = torch.randn(2, 3, 4).log_softmax(-1)
    target = torch.randint(0, 4, (2, 3))
    torch.testing.assert_close(
        NLL(class_dim=-1)(log_probs, target), NLL()(log_probs.transpose(1, 2), target)
    )


def test_probability_target_is_rejected() -> None:
    with pytest.raises(TargetMismatchError, match=r"NLL.*class-index targets must be an integer"):
        NLL()(torch.randn(4, 3), torch.rand(4, 3))
