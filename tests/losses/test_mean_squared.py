from __future__ import annotations

import pytest
import torch

from multiloss.losses import MeanSquared, TargetMismatchError


def test_matches_a_naive_loop() -> None:
    input, target = torch.randn(5, 2), torch.randn(5, 2)
    expected = (
        sum((float(input[i, j]) - float(target[i, j])) ** 2 for i in range(5) for j in range(2))
        / 10
    )
    assert float(MeanSquared()(input, target)) == pytest.approx(expected, rel=1e-6)


def test_trailing_singleton_is_aligned_not_broadcast() -> None:
    input, target = torch.randn(6, 1), torch.randn(6)
    expected = float(((input[:, 0] - target) ** 2).mean())
    assert float(MeanSquared()(input, target)) == pytest.approx(expected, rel=1e-6)
    assert float(MeanSquared()(target, input)) == pytest.approx(expected, rel=1e-6)


def test_integer_target_is_cast() -> None:
    value = MeanSquared()(torch.tensor([1.0, 2.0]), torch.tensor([1, 0]))
    assert float(value) == pytest.approx(2.0)


def test_broadcastable_but_different_shape_is_an_error() -> None:
    with pytest.raises(TargetMismatchError, match=r"input's shape \(4, 1\)"):
        MeanSquared()(torch.zeros(4, 1), torch.zeros(4, 3))
