from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from multiloss.losses import CrossEntropy, TargetMismatchError


def _naive(probs: torch.Tensor, target: torch.Tensor) -> float:
    """-mean_i sum_c q_ic log p_ic with one-hot q for index targets, by loops."""
    total = 0.0
    for i in range(probs.shape[0]):
        if target.dim() == 1:
            total -= math.log(float(probs[i, int(target[i])]))
        else:
            total -= sum(
                float(target[i, c]) * math.log(float(probs[i, c])) for c in range(probs.shape[1])
            )
    return total / probs.shape[0]


def test_logits_and_index_targets() -> None:
    logits, target = torch.randn(6, 4), torch.tensor([0, 3, 1, 2, 2, 0])
    expected = _naive(logits.softmax(1), target)
    assert float(CrossEntropy()(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_the_three_input_kinds_agree() -> None:
    logits, target = torch.randn(5, 3), torch.tensor([2, 0, 1, 1, 0])
    from_logits = CrossEntropy()(logits, target)
    from_probs = CrossEntropy(input="probabilities")(logits.softmax(1), target)
    from_log_probs = CrossEntropy(input="log_probabilities")(logits.log_softmax(1), target)
    torch.testing.assert_close(from_probs, from_logits)
    torch.testing.assert_close(from_log_probs, from_logits)


def test_probability_targets() -> None:
    probs = torch.randn(4, 3).softmax(1)
    target = torch.randn(4, 3).softmax(1)
    expected = _naive(probs, target)
    value = CrossEntropy(input="probabilities")(probs, target)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_zero_probability_is_large_but_finite() -> None:
    value = CrossEntropy(input="probabilities")(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert math.isfinite(float(value))
    assert float(value) > 50


def test_class_dim_last_matches_class_dim_one() -> None:
    logits = torch.randn(2, 5, 3)  # (batch, time, classes)
    target = torch.randint(0, 3, (2, 5))
    last = CrossEntropy(class_dim=-1)(logits, target)
    first = CrossEntropy(class_dim=1)(logits.transpose(1, 2), target)
    torch.testing.assert_close(last, first)
    soft = torch.randn(2, 5, 3).softmax(-1)
    torch.testing.assert_close(
        CrossEntropy(class_dim=-1)(logits, soft),
        CrossEntropy()(logits.transpose(1, 2), soft.transpose(1, 2)),
    )


def test_unbatched_input() -> None:
    logits = torch.tensor([0.0, math.log(3.0)])
    assert float(CrossEntropy(class_dim=0)(logits, torch.tensor(1))) == pytest.approx(
        -math.log(0.75), rel=1e-6
    )


def test_label_smoothing_and_ignore_index() -> None:
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, -100, 2])
    value = CrossEntropy(label_smoothing=0.2)(logits, target)
    log_p = logits.log_softmax(1)
    kept = [0, 1, 3]
    expected = sum(
        -(0.8 * float(log_p[i, int(target[i])]) + 0.2 * float(log_p[i].mean())) for i in kept
    ) / len(kept)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_float_index_target_suggests_long() -> None:
    with pytest.raises(TargetMismatchError, match=r"integer tensor \(convert with target.long"):
        CrossEntropy(target="index")(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]))


def test_auto_float_target_of_index_shape_is_an_error() -> None:
    with pytest.raises(TargetMismatchError, match="probability targets must be"):
        CrossEntropy()(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]))


def test_index_target_of_wrong_shape_names_expected_shape() -> None:
    with pytest.raises(TargetMismatchError, match=r"without the class dim 1, \(4,\)"):
        CrossEntropy()(torch.randn(4, 3), torch.zeros(4, 3, dtype=torch.long))


def test_class_dim_out_of_range() -> None:
    with pytest.raises(TargetMismatchError, match="`class_dim` 2 is out of range for a 2-D"):
        CrossEntropy(class_dim=2)(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input": "scores"}, r"`input` of CrossEntropy must be one of \{'logits'"),
        ({"target": "soft"}, r"`target` of CrossEntropy must be one of"),
        ({"label_smoothing": 1.0}, r"`label_smoothing` of CrossEntropy must be in \[0, 1\)"),
        ({"label_smoothing": float("nan")}, "`label_smoothing` of CrossEntropy must be a finite"),
        ({"class_dim": 1.5}, "`class_dim` of CrossEntropy must be an int"),
        ({"class_weight": [1.0, 2.0]}, "`class_weight` of CrossEntropy must be a 1-D"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        CrossEntropy(**kwargs)


@pytest.mark.parametrize(
    ("loss", "input", "target", "match"),
    [
        (
            CrossEntropy(),
            torch.randn(4, 3),
            torch.tensor([0, 1, 7, 0]),
            r"`target` of CrossEntropy\(input='logits'\) \(input shape \(4, 3\) float32, class "
            r"dim 1\) must hold class indices in \[0, 3\) for 3 classes .*; got 7 at 1 of 4",
        ),
        (
            CrossEntropy(class_dim=-1, ignore_index=1),
            torch.randn(2, 5, 3),
            torch.full((2, 5), -1),
            r"class indices in \[0, 3\) for 3 classes; got -1 at 10 of 10 positions",
        ),
        (
            CrossEntropy(input="probabilities"),
            -torch.rand(4, 3),
            torch.tensor([0, 1, 2, 0]),
            r"`input` of CrossEntropy\(input='probabilities'\) must hold probabilities in "
            r"\[0, 1\] \(pass input='logits' for raw scores\); got values from -",
        ),
        (
            CrossEntropy(target="probabilities"),
            torch.randn(4, 3),
            torch.full((4, 3), 5 / 3),
            r"`target` of .* must hold class probabilities in \[0, 1\]; got values from 1.66",
        ),
        (
            CrossEntropy(target="probabilities"),
            torch.randn(4, 3),
            torch.full((4, 3), 0.5),
            r"`target` of .* must hold distributions summing to 1 .* class dim 1 .*; got "
            r"values from 1.5 to 1.5",
        ),
        (
            CrossEntropy(class_weight=torch.ones(5)),
            torch.randn(4, 3),
            torch.tensor([0, 1, 2, 0]),
            r"`class_weight` of CrossEntropy must have one entry per class; got 5 entries for an "
            r"input shape \(4, 3\) float32 with 3 classes along dim 1",
        ),
    ],
)
def test_bad_values_are_errors_naming_the_parameter(
    loss: CrossEntropy, input: torch.Tensor, target: torch.Tensor, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        loss(input, target)


def test_ignore_index_and_label_smoothing_targets_pass_the_checks() -> None:
    logits = torch.randn(3, 4)
    assert torch.isfinite(CrossEntropy()(logits, torch.tensor([0, -100, 3])))
    smoothed = torch.full((3, 4), 0.1 / 4) + 0.9 * torch.eye(4)[:3]
    assert torch.isfinite(CrossEntropy()(logits, smoothed))


def test_all_zero_soft_target_rows_are_masked_positions() -> None:
    # A row of zeros (a padding position) is accepted and contributes nothing, as in
    # F.cross_entropy; a row summing to something else than 0 or 1 is not.
    logits = torch.randn(3, 4)
    target = torch.softmax(torch.randn(3, 4), dim=1)
    target[1] = 0.0
    loss = CrossEntropy(target="probabilities", reduction="sum")
    expected = F.cross_entropy(logits[[0, 2]], target[[0, 2]], reduction="sum")
    torch.testing.assert_close(loss(logits, target), expected)
    target[1] = 0.25
    target[1, 0] = 0.0  # sums to 0.75
    with pytest.raises(ValueError, match=r"summing to 1 .* got values from 0.75 to 1"):
        loss(logits, target)
