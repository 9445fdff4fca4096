from __future__ import annotations

import math

import pytest
import torch

from multiloss.losses import BinaryCrossEntropy, TargetMismatchError


def _naive(probs: list[float], labels: list[float]) -> float:
    return -sum(
        y * math.log(p) + (1 - y) * math.log(1 - p) for p, y in zip(probs, labels, strict=True)
    ) / len(probs)


def test_probabilities_match_the_formula() -> None:
    probs, labels = [0.9, 0.3, 0.6], [1.0, 0.0, 1.0]
    value = BinaryCrossEntropy()(torch.tensor(probs), torch.tensor(labels))
    assert float(value) == pytest.approx(_naive(probs, labels), rel=1e-6)


def test_logits_match_probabilities() -> None:
    logits, labels = torch.randn(7), torch.randint(0, 2, (7,))
    from_logits = BinaryCrossEntropy(input="logits")(logits, labels)
    from_probs = BinaryCrossEntropy()(logits.sigmoid(), labels)
    torch.testing.assert_close(from_logits, from_probs)


def test_one_logit_per_example_against_flat_labels() -> None:
    logits, labels = torch.randn(5, 1), torch.tensor([True, False, True, True, False])
    value = BinaryCrossEntropy(input="logits")(logits, labels)
    expected = _naive(logits[:, 0].sigmoid().tolist(), labels.float().tolist())
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_pos_weight() -> None:
    logits, labels = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    value = BinaryCrossEntropy(input="logits", pos_weight=3.0)(logits, labels)
    assert float(value) == pytest.approx((3.0 * math.log(2) + math.log(2)) / 2, rel=1e-6)


def test_pos_weight_needs_logits() -> None:
    with pytest.raises(ValueError, match="`pos_weight` of BinaryCrossEntropy needs input='logits'"):
        BinaryCrossEntropy(pos_weight=2.0)


def test_bad_pos_weight() -> None:
    with pytest.raises(ValueError, match="`pos_weight` of BinaryCrossEntropy must be > 0"):
        BinaryCrossEntropy(input="logits", pos_weight=0.0)


def test_shape_mismatch() -> None:
    with pytest.raises(TargetMismatchError, match=r"shape \(4, 2\) float32.*shape \(4,\) int64"):
        BinaryCrossEntropy()(torch.rand(4, 2), torch.zeros(4, dtype=torch.long))


def test_pos_weight_is_a_buffer_that_follows_the_module() -> None:
    loss = BinaryCrossEntropy(input="logits", pos_weight=2.0).to(torch.float64)
    assert loss.pos_weight_tensor is not None
    assert loss.pos_weight_tensor.dtype == torch.float64
    assert "pos_weight_tensor" not in loss.state_dict()  # derived from the argument
    value = loss(torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 0.0]))
    assert float(value) == pytest.approx((2.0 + 1.0) * math.log(2) / 2)


@pytest.mark.parametrize(
    ("loss", "input", "target", "match"),
    [
        (
            BinaryCrossEntropy(input="logits"),
            torch.randn(4),
            torch.full((4,), 2.0),
            r"`target` of BinaryCrossEntropy\(input='logits'\) must hold 0/1 labels .* in "
            r"\[0, 1\]; got values from 2 to 2",
        ),
        (
            BinaryCrossEntropy(input="logits"),
            torch.randn(4),
            torch.tensor([0, 1, -1, 1]),
            r"`target` .* \[0, 1\]; got values from -1 to 1",
        ),
        (
            BinaryCrossEntropy(),
            torch.full((4,), 1.5),
            torch.ones(4),
            r"`input` of BinaryCrossEntropy\(input='probabilities'\) must hold probabilities "
            r"in \[0, 1\] \(pass input='logits' for raw scores\); got values from 1.5 to 1.5",
        ),
        (
            BinaryCrossEntropy(),
            torch.full((4,), 0.5),
            torch.full((4,), -0.5),
            r"`target` of .* got values from -0.5 to -0.5",
        ),
    ],
)
def test_values_out_of_range_are_errors_naming_the_parameter(
    loss: BinaryCrossEntropy, input: torch.Tensor, target: torch.Tensor, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        loss(input, target)


def test_bool_and_soft_targets_in_range_pass() -> None:
    logits = torch.randn(3)
    for target in (torch.tensor([True, False, True]), torch.tensor([0.0, 0.25, 1.0])):
        assert float(BinaryCrossEntropy(input="logits")(logits, target)) > 0
