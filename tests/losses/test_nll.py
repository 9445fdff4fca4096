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


def test_class_index_out_of_range_names_target_classes_and_value() -> None:
    log_probs = torch.randn(4, 3).log_softmax(1)
    with pytest.raises(
        ValueError,
        match=r"`target` of NLL\(\) \(input shape \(4, 3\) float32, class dim 1\) must hold "
        r"class indices in \[0, 3\) for 3 classes \(or ignore_index -100\); got -3, 7 at 2 of 4",
    ):
        NLL()(log_probs, torch.tensor([0, 1, 7, -3]))
    NLL()(log_probs, torch.tensor([0, -100, 2, 1]))  # ignore_index is allowed


def test_positive_log_probabilities_are_an_error_naming_input() -> None:
    with pytest.raises(ValueError, match=r"`input` of NLL\(\) must hold log-probabilities"):
        NLL()(torch.tensor([[0.5, 2.0]]), torch.tensor([1]))


def test_class_weight_of_the_wrong_length_names_it() -> None:
    with pytest.raises(
        ValueError,
        match=r"`class_weight` of NLL must have one entry per class; "
        r"got 5 entries .* 3 classes",
    ):
        NLL(class_weight=torch.ones(5))(torch.randn(2, 3).log_softmax(1), torch.tensor([0, 1]))
