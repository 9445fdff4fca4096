"""NamedLosses: named scalar losses with their weights, checked when built."""

from __future__ import annotations

import pytest
import torch

import multiloss as ml


def test_weights_default_to_one_and_are_checked() -> None:
    losses = ml.NamedLosses({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, weights={"b": 0.5})
    assert losses.weights == {"a": 1.0, "b": 0.5}
    with pytest.raises(ValueError, match=r"`weights` of NamedLosses names losses that are not"):
        ml.NamedLosses({"a": torch.tensor(1.0)}, weights={"z": 1.0})


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("x", TypeError, r"loss 'a' \(from NamedLosses\) must be a scalar torch.Tensor; got 'x'"),
        (torch.ones(3), ValueError, r"loss 'a' \(from NamedLosses\) must be a scalar"),
        (torch.tensor(1), TypeError, "must be a floating-point tensor"),
    ],
)
def test_values_that_are_not_scalar_losses_are_named(
    value: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        ml.NamedLosses({"a": value})  # type: ignore[dict-item]
