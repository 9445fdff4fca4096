"""EntropyRegularizer: entropies against torch.distributions, the gap, masking, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical

from multiloss.layers import EntropyRegularizer


def test_minimize_is_the_mean_entropy_of_each_distribution() -> None:
    logits = torch.randn(3, 5, 4)
    layer = EntropyRegularizer(mode="minimize")
    layer(logits)
    expected = Categorical(logits=logits).entropy().mean()
    torch.testing.assert_close(layer.compute_aux_loss(), expected)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    k=st.integers(1, 7),
    scale=st.floats(0.0, 20.0),
    seed=st.integers(0, 999),
)
def test_maximize_is_the_non_negative_gap_to_log_k(
    rows: int, k: int, scale: float, seed: int
) -> None:
    torch.manual_seed(seed)
    logits = scale * torch.randn(rows, k)
    layer = EntropyRegularizer(mode="maximize")
    layer(logits)
    gap = float(layer.compute_aux_loss())
    assert gap >= 0.0
    expected = math.log(k) - float(Categorical(logits=logits).entropy().mean())
    assert gap == pytest.approx(max(expected, 0.0), abs=1e-5)


def test_the_gap_is_zero_at_the_uniform_distribution_and_its_gradient_is_minus_entropy() -> None:
    uniform = EntropyRegularizer(mode="maximize")
    uniform(torch.full((2, 6), 3.0))
    assert float(uniform.compute_aux_loss()) == pytest.approx(0.0, abs=1e-6)

    logits = torch.randn(4, 6, requires_grad=True)
    layer = EntropyRegularizer(mode="maximize")
    layer(logits)
    (gap_grad,) = torch.autograd.grad(layer.compute_aux_loss(), logits)
    (entropy_grad,) = torch.autograd.grad(-Categorical(logits=logits).entropy().mean(), logits)
    torch.testing.assert_close(gap_grad, entropy_grad)


def test_masked_categories_leave_k_and_the_gradient_finite() -> None:
    scores = torch.zeros(2, 5)
    scores[0, 3:] = float("-inf")  # row 0 may use 3 categories, row 1 all 5
    scores.requires_grad_()
    logits_layer = EntropyRegularizer(mode="maximize")
    logits_layer(scores)
    gap = logits_layer.compute_aux_loss()
    assert float(gap.detach()) == pytest.approx(0.0, abs=1e-6)  # both rows uniform over allowed
    gap.backward()
    assert scores.grad is not None
    assert torch.isfinite(scores.grad).all()

    probs = torch.softmax(torch.tensor([[1.0, 2.0, float("-inf")]]), -1)
    prob_layer = EntropyRegularizer(mode="maximize", from_logits=False)
    prob_layer(probs)
    p = probs[0, :2]
    expected = math.log(2) + float((p * p.log()).sum())
    assert float(prob_layer.compute_aux_loss()) == pytest.approx(expected, rel=1e-5)


def test_batch_entropy_is_the_entropy_of_the_mean_prediction() -> None:
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])  # confident, but on different classes
    sample = EntropyRegularizer(mode="maximize")
    sample(logits)
    batch = EntropyRegularizer(mode="maximize", over="batch")
    batch(logits)
    assert float(sample.compute_aux_loss()) == pytest.approx(math.log(2), abs=1e-6)
    assert float(batch.compute_aux_loss()) == pytest.approx(0.0, abs=1e-6)


def test_dim_selects_the_category_axis() -> None:
    logits = torch.randn(3, 4, 2)
    layer = EntropyRegularizer(mode="minimize", dim=1)
    layer(logits)
    expected = Categorical(logits=logits.transpose(1, 2)).entropy().mean()
    torch.testing.assert_close(layer.compute_aux_loss(), expected)


def test_diagnostics_are_entropy_perplexity_and_normalized_entropy() -> None:
    logits = torch.randn(5, 8)
    layer = EntropyRegularizer(mode="minimize")
    layer(logits)
    diagnostics = layer.aux_loss_diagnostics()
    entropy = Categorical(logits=logits).entropy()
    assert diagnostics["entropy"] == pytest.approx(float(entropy.mean()), rel=1e-5)
    assert diagnostics["perplexity"] == pytest.approx(math.exp(float(entropy.mean())), rel=1e-5)
    assert diagnostics["normalized_entropy"] == pytest.approx(
        float((entropy / math.log(8)).mean()), rel=1e-5
    )


def test_mode_is_required_and_checked() -> None:
    with pytest.raises(TypeError, match="mode"):
        EntropyRegularizer()  # type: ignore[call-arg]
    with pytest.raises(
        ValueError, match=r"`mode` of EntropyRegularizer must be one of \{'maximize', 'minimize'\}"
    ):
        EntropyRegularizer(mode="max")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"from_logits": 1}, TypeError, r"`from_logits` of EntropyRegularizer must be a bool"),
        ({"over": "all"}, ValueError, r"`over` of EntropyRegularizer must be one of \{'sample'"),
        ({"dim": 1.0}, TypeError, r"`dim` of EntropyRegularizer must be an int"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        EntropyRegularizer(mode="minimize", **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"`dim` of EntropyRegularizer is 2, but .* \(3, 4\)"):
        EntropyRegularizer(mode="minimize", dim=2)(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="must be a floating-point Tensor"):
        EntropyRegularizer(mode="minimize")(torch.zeros(3, dtype=torch.long))


def test_term_names_say_the_direction() -> None:
    assert EntropyRegularizer(mode="maximize").aux_loss_name == "entropy_gap"
    assert EntropyRegularizer(mode="minimize").aux_loss_name == "entropy"


def test_probabilities_outside_zero_one_are_an_error_naming_the_input() -> None:
    layer = EntropyRegularizer(mode="minimize", from_logits=False)
    with pytest.raises(
        ValueError,
        match=r"the input of EntropyRegularizer\(from_logits=False\) must hold probabilities in "
        r"\[0, 1\] \(pass from_logits=True for logits\); got values from -0.5 to -0.5",
    ):
        layer(torch.full((3, 4), -0.5))
