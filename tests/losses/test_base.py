"""Shared behaviour of the built-in losses: shape checks, reductions, reprs, devices."""

from __future__ import annotations

import math

import pytest
import torch

from multiloss.losses import (
    NLL,
    BinaryCrossEntropy,
    Contrastive,
    CrossEntropy,
    Loss,
    MeanAbsolute,
    MeanSquared,
    TargetMismatchError,
)

# (loss, a fitting input, a fitting target) for every built-in loss.
CASES = [
    (MeanSquared(), torch.randn(4, 3), torch.randn(4, 3)),
    (MeanAbsolute(), torch.randn(4, 3), torch.randn(4, 3)),
    (CrossEntropy(), torch.randn(4, 3), torch.tensor([0, 2, 1, 0])),
    (NLL(), torch.randn(4, 3).log_softmax(1), torch.tensor([0, 2, 1, 0])),
    (BinaryCrossEntropy(), torch.rand(4, 3), torch.rand(4, 3)),
    (Contrastive(), torch.rand(4), torch.tensor([1, 0, 1, 0])),
]
IDS = [type(case[0]).__name__ for case in CASES]


@pytest.mark.parametrize(("loss", "input", "target"), CASES, ids=IDS)
def test_is_a_nonnegative_scalar_with_gradient(loss: Loss, input, target) -> None:
    input = input.clone().requires_grad_()
    value = loss(input, target)
    assert value.dim() == 0
    assert float(value.detach()) >= 0.0
    value.backward()
    assert input.grad is not None
    assert torch.isfinite(input.grad).all()


@pytest.mark.parametrize(("loss", "input", "target"), CASES, ids=IDS)
def test_reductions_agree(loss: Loss, input, target) -> None:
    values = type(loss)(reduction="none")(input, target)
    total = type(loss)(reduction="sum")(input, target)
    torch.testing.assert_close(total, values.sum())
    torch.testing.assert_close(loss(input, target), values.mean())


@pytest.mark.parametrize(("loss", "input", "target"), CASES, ids=IDS)
def test_non_tensor_target_is_named(loss: Loss, input, target) -> None:
    with pytest.raises(TargetMismatchError, match=rf"{type(loss).__name__}.*must be a tensor"):
        loss(input, target.tolist())


@pytest.mark.parametrize(("loss", "input", "target"), CASES[:5], ids=IDS[:5])
def test_integer_input_is_rejected(loss: Loss, input, target) -> None:
    with pytest.raises(TargetMismatchError, match="input must be a floating-point tensor"):
        loss(torch.ones(input.shape, dtype=torch.long), target)


def test_bad_reduction_lists_the_options() -> None:
    with pytest.raises(ValueError, match=r"`reduction` of MeanSquared must be one of .*'mean'"):
        MeanSquared(reduction="avg")


def test_mismatch_names_loss_shapes_and_dtypes() -> None:
    with pytest.raises(TargetMismatchError) as info:
        MeanSquared()(torch.zeros(8, 1), torch.zeros(8, 3, dtype=torch.float64))
    message = str(info.value)
    assert "MeanSquared()" in message
    assert "shape (8, 1) float32" in message
    assert "shape (8, 3) float64" in message


def test_reprs_show_hyperparameters() -> None:
    assert repr(MeanSquared(reduction="sum")) == "MeanSquared(reduction='sum')"
    assert repr(Contrastive(margin=2.0)) == "Contrastive(margin=2.0)"
    assert repr(CrossEntropy(class_dim=-1, label_smoothing=0.1)) == (
        "CrossEntropy(input='logits', class_dim=-1, label_smoothing=0.1)"
    )
    assert repr(BinaryCrossEntropy(input="logits", pos_weight=3.0)) == (
        "BinaryCrossEntropy(input='logits', pos_weight=3.0)"
    )
    assert repr(NLL(ignore_index=0)) == "NLL(ignore_index=0)"


def test_class_weight_is_a_buffer_that_follows_the_module() -> None:
    loss = CrossEntropy(class_weight=torch.tensor([1.0, 2.0]))
    assert "class_weight" in dict(loss.named_buffers())
    loss = loss.to(torch.float64)
    assert loss.class_weight is not None
    assert loss.class_weight.dtype == torch.float64


def test_half_precision_target_is_cast_to_the_input_dtype() -> None:
    value = MeanSquared()(torch.ones(3, dtype=torch.bfloat16), torch.zeros(3))
    assert value.dtype == torch.bfloat16
    assert math.isclose(float(value), 1.0)


def test_value_checks_on_an_accelerator_wait_for_the_log_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off the CPU nothing is read per call: the running extremes wait on the device until
    ``run_deferred_value_checks`` reads them all at once, and the message names the parameter."""
    from multiloss import _validation

    monkeypatch.setattr(_validation, "_read_at_once", lambda value: False)
    loss = BinaryCrossEntropy(input="logits")
    loss(torch.randn(4), torch.full((4,), 0.5))
    loss(torch.randn(4), torch.full((4,), 3.0))  # bad, but not read yet
    loss(torch.randn(4), torch.full((4,), -1.0))
    CrossEntropy()(torch.randn(2, 3), torch.tensor([0, 2]))  # good: pending, passes
    assert _validation.pending_value_checks() == 2
    with pytest.raises(
        ValueError,
        match=r"`target` of BinaryCrossEntropy\(input='logits'\) .* "
        r"got values from -1 to 3 \(found at a deferred check",
    ):
        _validation.run_deferred_value_checks()
    assert _validation.pending_value_checks() == 0
    loss(torch.randn(4), torch.full((4,), 1.0))
    _validation.run_deferred_value_checks()  # a good batch after the failure: nothing pending


def test_deferred_class_index_checks_allow_ignore_index_and_keep_one_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On an accelerator: ignore_index is masked before the min/max; batches of other shapes
    # (sequence lengths) share one pending entry per loss; a bad index is reported later.
    from multiloss import _validation

    monkeypatch.setattr(_validation, "_read_at_once", lambda value: False)
    loss = CrossEntropy()
    for length in (3, 5, 7):
        target = torch.randint(0, 4, (length,))
        target[0] = -100
        loss(torch.randn(length, 4), target)
    assert _validation.pending_value_checks() == 1
    _validation.run_deferred_value_checks()
    with pytest.raises(IndexError):  # torch's own error comes first (a device assert on CUDA)
        loss(torch.randn(2, 4), torch.tensor([1, 9]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\) .* got values from 1 to 9"):
        _validation.run_deferred_value_checks()  # and the check then names the parameter
