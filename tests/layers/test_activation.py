"""ActivationRegularizer: penalties against hand-computed references, diagnostics, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import multiloss as ml
from multiloss.layers import ActivationRegularizer


def _kl_reference(activity: list[float], rho: float) -> float:
    """Mean over units of KL(rho || q) for Bernoulli means, written out term by term."""
    total = 0.0
    for q in activity:
        total += rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))
    return total / len(activity)


def test_l1_and_l2_are_means_over_every_element() -> None:
    a = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.5, -0.5]])
    l1 = ActivationRegularizer(penalty="l1")
    l1(a)
    assert float(l1.compute_aux_loss()) == pytest.approx((1 + 2 + 0 + 3 + 0.5 + 0.5) / 6)
    l2 = ActivationRegularizer(penalty="l2")
    l2(a)
    assert float(l2.compute_aux_loss()) == pytest.approx((1 + 4 + 0 + 9 + 0.25 + 0.25) / 6)


@pytest.mark.parametrize(
    ("squash", "activity"),
    [
        ("tanh", lambda a: torch.tanh(a.abs())),
        ("sigmoid", torch.sigmoid),
        ("none", lambda a: a),
    ],
)
def test_kl_matches_the_sparse_autoencoder_formula(squash: str, activity: object) -> None:
    a = torch.rand(7, 4) * 0.9 + 0.05 if squash == "none" else torch.randn(7, 4)
    layer = ActivationRegularizer(penalty="kl", rho=0.1, squash=squash)
    layer(a)
    per_unit = [float(activity(a[:, j]).mean()) for j in range(4)]  # type: ignore[operator]
    assert float(layer.compute_aux_loss()) == pytest.approx(_kl_reference(per_unit, 0.1), rel=1e-5)


def test_kl_over_conv_channels_averages_batch_and_space_per_channel() -> None:
    a = torch.randn(2, 3, 4, 4)
    layer = ActivationRegularizer(penalty="kl", rho=0.3, unit_dim=1, squash="sigmoid")
    layer(a)
    per_channel = [float(torch.sigmoid(a[:, c]).mean()) for c in range(3)]
    assert float(layer.compute_aux_loss()) == pytest.approx(_kl_reference(per_channel, 0.3))


def test_kl_is_zero_when_every_unit_is_at_the_target() -> None:
    layer = ActivationRegularizer(penalty="kl", rho=0.2, squash="none")
    layer(torch.full((5, 3), 0.2))
    assert float(layer.compute_aux_loss()) == pytest.approx(0.0, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    rho=st.floats(0.01, 0.99),
    scale=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
)
def test_kl_is_non_negative_and_its_gradient_moves_activity_towards_rho(
    rho: float, scale: float, seed: int
) -> None:
    torch.manual_seed(seed)
    a = (scale * torch.randn(6, 3)).requires_grad_()
    layer = ActivationRegularizer(penalty="kl", rho=rho, squash="sigmoid")
    layer(a)
    loss = layer.compute_aux_loss()
    assert float(loss.detach()) >= 0.0
    loss.backward()
    assert a.grad is not None
    activity = torch.sigmoid(a.detach()).mean(0)
    # Descending the gradient raises a unit's activity when it is below rho, lowers it above.
    step = -a.grad.sum(0)
    for j in range(3):
        if abs(float(activity[j]) - rho) > 1e-3 and float(step[j]) != 0.0:
            assert (float(step[j]) > 0) == (float(activity[j]) < rho)


def test_diagnostics_count_near_zero_and_dead_units() -> None:
    a = torch.tensor([[0.0, 1.0, 0.0005], [0.0, 0.0, 2.0]])
    layer = ActivationRegularizer(penalty="l1", zero_threshold=1e-3)
    layer(a)
    diagnostics = layer.aux_loss_diagnostics()
    assert diagnostics["near_zero"] == pytest.approx(4 / 6)
    assert diagnostics["dead_units"] == pytest.approx(1 / 3)  # only unit 0 is silent on both
    assert diagnostics["mean"] == pytest.approx(3.0005 / 6)
    assert "activity" not in diagnostics


def test_wrapping_returns_the_module_output_and_following_passes_input_through() -> None:
    linear = nn.Linear(3, 2)
    wrapped = ActivationRegularizer(linear)
    x = torch.randn(4, 3)
    torch.testing.assert_close(wrapped(x), linear(x))
    follower = ActivationRegularizer()
    assert follower(x) is x


def test_select_regularizes_one_part_and_passes_the_whole_output() -> None:
    out = {"hidden": torch.tensor([[2.0, -2.0]]), "count": 3}
    layer = ActivationRegularizer(select="hidden")
    assert layer(out) is out
    assert float(layer.compute_aux_loss()) == pytest.approx(2.0)


def test_in_a_model_the_term_is_named_by_path() -> None:
    model = nn.Sequential(nn.Linear(3, 4), ActivationRegularizer(nn.ReLU(), aux_loss_weight=0.01))
    with ml.collect(model) as book:
        model(torch.randn(2, 3))
    assert book.weights == {"1/l1": 0.01}


class _Nothing(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


@pytest.mark.parametrize("rho", [0.0, 1.0, -0.1, 1.5])
def test_rho_outside_the_open_unit_interval_is_an_error(rho: float) -> None:
    with pytest.raises(
        ValueError, match=r"`rho` of ActivationRegularizer must be in \(0, 1\); got"
    ):
        ActivationRegularizer(penalty="kl", rho=rho)


def test_module_that_produced_no_tensor_is_an_error() -> None:
    layer = ActivationRegularizer(_Nothing())
    with pytest.raises(
        TypeError, match=r"wrapped by ActivationRegularizer \(_Nothing\) produced no"
    ):
        layer(torch.ones(2))


def test_tuple_output_without_select_hints_at_select() -> None:
    layer = ActivationRegularizer(nn.RNN(3, 2))
    with pytest.raises(
        TypeError,
        match=r"no tensor.*got a tuple \(Tensor\(2, 1, 2\), Tensor\(1, 1, 2\)\); pass `select=`",
    ):
        layer(torch.randn(2, 1, 3))


def test_select_that_finds_nothing_is_an_error_listing_keys() -> None:
    layer = ActivationRegularizer(select="hiden")
    with pytest.raises(TypeError, match=r"no tensor at `select`='hiden'.*\['count', 'hidden'\]"):
        layer({"hidden": torch.ones(1), "count": torch.ones(1)})


def test_integer_activations_are_an_error() -> None:
    with pytest.raises(TypeError, match="expected a floating-point Tensor"):
        ActivationRegularizer()(torch.ones(2, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"penalty": "l3"},
            ValueError,
            r"`penalty` of ActivationRegularizer must be one of \{'l1'",
        ),
        ({"squash": "relu"}, ValueError, r"`squash` of .* must be one of \{'tanh', 'sigmoid'"),
        ({"zero_threshold": -1.0}, ValueError, r"`zero_threshold` of .* must be >= 0"),
        ({"select": 1.5}, TypeError, r"`select` of ActivationRegularizer must be an int index"),
        ({"unit_dim": "1"}, TypeError, r"`unit_dim` of ActivationRegularizer must be an int"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ActivationRegularizer(**kwargs)  # type: ignore[arg-type]


def test_unit_dim_outside_the_activations_is_an_error() -> None:
    layer = ActivationRegularizer(penalty="kl", unit_dim=3)
    with pytest.raises(
        ValueError, match=r"`unit_dim` of ActivationRegularizer must index .* got 3 .* \(2, 3\)"
    ):
        layer(torch.rand(2, 3))  # at the forward, where the activations are


def test_repr_shows_kl_settings() -> None:
    text = repr(ActivationRegularizer(penalty="kl", rho=0.1, unit_dim=1))
    assert "penalty='kl', rho=0.1, squash='tanh', unit_dim=1" in text


def test_unit_dim_out_of_range_is_an_error_for_every_penalty() -> None:
    for penalty in ("l1", "l2", "kl"):
        layer = ActivationRegularizer(penalty=penalty, unit_dim=5)
        with pytest.raises(
            ValueError,
            match=r"`unit_dim` of ActivationRegularizer must index a "
            r"dimension .*\[-2, 1\]\); got 5 for activations of shape \(3, 4\)",
        ):
            layer(torch.rand(3, 4))
