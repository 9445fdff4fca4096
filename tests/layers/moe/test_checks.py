"""Bad input to MixtureOfExperts: each a clear error naming the parameter and the value."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from multiloss.layers import MixtureOfExperts
from multiloss.schedules import LinearWarmup

BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"top_k": 5}, ValueError, r"`top_k` of MixtureOfExperts must be <= num_experts=4; got 5"),
    ({"top_k": 0}, ValueError, r"`top_k` of MixtureOfExperts must be >= 1; got 0"),
    (
        {"num_experts": 0, "top_k": 1},
        ValueError,
        r"`num_experts` of MixtureOfExperts must be >= 1; got 0",
    ),
    ({"num_experts": 2.5}, TypeError, r"`num_experts` of MixtureOfExperts must be an int"),
    ({"dim": 0}, ValueError, r"`dim` of MixtureOfExperts must be >= 1; got 0"),
    (
        {"balance": {"aux": 0.01}},
        ValueError,
        r"balancing type in `balance` of MixtureOfExperts must be one of "
        r"\{'switch', 'sequence', 'global', 'z', 'bias'\}; got 'aux'",
    ),
    (
        {"balance": {"switch": -0.01}},
        ValueError,
        r"coefficient of 'switch' in `balance` of MixtureOfExperts must be >= 0.0; got -0.01",
    ),
    (
        {"balance": {"bias": -1e-3}},
        ValueError,
        r"update rate of 'bias' in `balance` of MixtureOfExperts must be >= 0.0",
    ),
    ({"balance": {"z": float("nan")}}, ValueError, r"coefficient of 'z' .* finite float; got nan"),
    ({"balance": "switch"}, TypeError, r"`balance` of MixtureOfExperts must be a mapping"),
    (
        {"capacity_factor": 0.0},
        ValueError,
        r"`capacity_factor` of MixtureOfExperts must be > 0.0; got 0.0",
    ),
    (
        {"capacity_factor": -1},
        ValueError,
        r"`capacity_factor` of MixtureOfExperts must be > 0.0; got -1",
    ),
    (
        {"score": "relu"},
        ValueError,
        r"`score` of MixtureOfExperts must be one of \{'softmax', 'sigmoid'\}",
    ),
    (
        {"drop_policy": "random"},
        ValueError,
        r"`drop_policy` .* \{'probability', 'position'\}; got 'random'",
    ),
    (
        {"activation": "tanh"},
        ValueError,
        r"`activation` of MixtureOfExperts must be one of \{'swiglu'",
    ),
    (
        {"backend": "cuda"},
        ValueError,
        r"`backend` of MixtureOfExperts must be one of \{'auto', 'grouped_mm', 'blocked'\}",
    ),
    ({"jitter": 1.0}, ValueError, r"`jitter` of MixtureOfExperts must be in \[0, 1\); got 1.0"),
    (
        {"normalize_gates": 1},
        TypeError,
        r"`normalize_gates` of MixtureOfExperts must be a bool or None; got 1",
    ),
    (
        {"gradient_carrier": "yes"},
        TypeError,
        r"`gradient_carrier` of MixtureOfExperts must be a bool",
    ),
    (
        {"gradient_carrier": True, "aux_loss_schedule": LinearWarmup(10)},
        ValueError,
        r"`aux_loss_schedule` of MixtureOfExperts cannot be combined with gradient_carrier",
    ),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_ARGUMENTS)
def test_bad_arguments(overrides: dict[str, Any], error: type[Exception], message: str) -> None:
    arguments: dict[str, Any] = {"dim": 8, "hidden": 16, "num_experts": 4, "top_k": 2}
    arguments.update(overrides)
    with pytest.raises(error, match=message):
        MixtureOfExperts(**arguments)


@pytest.fixture
def layer() -> MixtureOfExperts:
    return MixtureOfExperts(8, 16, 4)


def test_input_whose_last_dimension_is_not_dim(layer: MixtureOfExperts) -> None:
    with pytest.raises(
        ValueError,
        match=r"input of MixtureOfExperts must have last dimension dim=8; got shape \(2, 3, 7\)",
    ):
        layer(torch.randn(2, 3, 7))


def test_non_floating_input(layer: MixtureOfExperts) -> None:
    with pytest.raises(
        TypeError, match=r"input of MixtureOfExperts must be a floating-point Tensor"
    ):
        layer(torch.ones(2, 8, dtype=torch.long))


def test_mask_of_the_wrong_shape(layer: MixtureOfExperts) -> None:
    with pytest.raises(
        ValueError,
        match=r"`mask` of MixtureOfExperts must have the input's shape without its last "
        r"dimension, \(2, 3\); got \(2, 4\)",
    ):
        layer(torch.randn(2, 3, 8), torch.ones(2, 4, dtype=torch.bool))


def test_mask_of_the_wrong_dtype(layer: MixtureOfExperts) -> None:
    with pytest.raises(
        TypeError,
        match=r"`mask` of MixtureOfExperts must be a bool \(or 0/1 integer\) Tensor "
        r".* dtype=torch.float32",
    ):
        layer(torch.randn(2, 3, 8), torch.ones(2, 3))


def test_sequence_balancing_needs_a_sequence_axis() -> None:
    layer = MixtureOfExperts(8, 16, 4, balance={"sequence": 0.01})
    with pytest.raises(
        ValueError,
        match=r"'sequence' balancing of MixtureOfExperts needs inputs of shape "
        r"\(batch, sequence, dim\); got shape \(5, 8\)",
    ):
        layer(torch.randn(5, 8))


def test_forcing_grouped_mm_where_it_cannot_run() -> None:
    layer = MixtureOfExperts(6, 16, 4, backend="grouped_mm")  # 24-byte rows
    with pytest.raises(
        ValueError,
        match=r"`backend` of MixtureOfExperts is 'grouped_mm', but torch._grouped_mm cannot run",
    ):
        layer(torch.randn(3, 6))


def test_an_integer_mask_must_be_zero_or_one() -> None:
    layer = MixtureOfExperts(4, 8, 2, top_k=1)
    with pytest.raises(
        ValueError,
        match=r"`mask` of MixtureOfExperts must hold 0 \(padding\) or "
        r"1 \(a real token\), or be a bool Tensor; got values from 0 to 2",
    ):
        layer(torch.randn(2, 3, 4), mask=torch.tensor([[1, 1, 0], [1, 2, 1]]))
    layer(torch.randn(2, 3, 4), mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))


def test_drop_policy_needs_a_capacity_factor() -> None:
    with pytest.raises(
        ValueError,
        match=r"`drop_policy` of MixtureOfExperts needs a "
        r"`capacity_factor` .*; got drop_policy='position' with capacity_factor=None",
    ):
        MixtureOfExperts(4, 8, 2, drop_policy="position")
    assert MixtureOfExperts(4, 8, 2, capacity_factor=1.0, drop_policy="position").drop_policy == (
        "position"
    )
