from __future__ import annotations

import pytest
import torch

from multiloss.losses import MeanAbsolute, TargetMismatchError


def test_matches_a_naive_loop() -> None:
    input, target = torch.randn(4, 3), torch.randn(4, 3)
    expected = (
        sum(abs(float(input[i, j]) - float(target[i, j])) for i in range(4) for j in range(3)) / 12
    )
    assert float(MeanAbsolute()(input, target)) == pytest.approx(expected, rel=1e-6)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(TargetMismatchError, match="MeanAbsolute"):
        MeanAbsolute()(torch.zeros(3), torch.zeros(4))
