"""AuxiliaryHead: targets from the batch, losses against references, inference costs nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import AuxiliaryHead, DroppedHead
from multiloss.schedules import Cosine


class _Counting(nn.Linear):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)


def _cross_entropy_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        log_norm = math.log(sum(math.exp(v) for v in row))
        total += log_norm - row[label]
    return total / len(labels)


@pytest.mark.parametrize(
    ("batch_of", "target"),
    [
        (lambda x, y: {"x": x, "label": y}, "label"),
        (lambda x, y: (x, y), 1),
        (lambda x, y: [x, y], -1),
        (lambda x, y: {"targets": {"aux": y}}, lambda batch: batch["targets"]["aux"]),
    ],
    ids=["dict-key", "tuple-index", "list-negative-index", "callable"],
)
def test_target_is_read_from_the_batch(batch_of: Any, target: Any) -> None:
    head = AuxiliaryHead(nn.Linear(4, 3), target=target)
    x, y = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    with ml.collect(head, batch=batch_of(x, y)) as book:
        out = head(x)
    assert out is x
    logits = head.head(x).detach()
    assert float(book["cross_entropy"].detach()) == pytest.approx(
        _cross_entropy_by_hand(logits, y), 1e-5
    )


def test_explicit_target_takes_precedence_over_the_batch() -> None:
    head = AuxiliaryHead(nn.Linear(4, 3), target="label")
    x = torch.randn(5, 4)
    y, other = torch.tensor([0, 2, 1, 1, 0]), torch.tensor([1, 1, 1, 1, 1])
    with ml.collect(head, batch={"label": other}) as book:
        head(x, target=y)
    expected = _cross_entropy_by_hand(head.head(x).detach(), y)
    assert float(book["cross_entropy"].detach()) == pytest.approx(expected, rel=1e-5)


def test_accuracy_diagnostic_counts_argmax_hits() -> None:
    head = AuxiliaryHead(nn.Identity(), target=1)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    head(logits, target=torch.tensor([0, 0, 0, 1]))
    assert head.aux_loss_diagnostics()["accuracy"] == pytest.approx(0.75)


def test_regression_diagnostics_are_errors() -> None:
    head = AuxiliaryHead(nn.Identity(), target=1, loss="mse")
    head(torch.tensor([[1.0], [3.0]]), target=torch.tensor([[0.0], [1.0]]))
    diagnostics = head.aux_loss_diagnostics()
    assert diagnostics["loss"] == pytest.approx((1 + 4) / 2)
    assert diagnostics["rmse"] == pytest.approx(math.sqrt(2.5))
    l1 = AuxiliaryHead(nn.Identity(), target=1, loss="l1")
    l1(torch.tensor([[1.0], [3.0]]), target=torch.tensor([[0.0], [1.0]]))
    assert l1.aux_loss_diagnostics()["mae"] == pytest.approx(1.5)


def test_plain_inference_does_not_run_the_head() -> None:
    _Counting.calls = 0
    head = AuxiliaryHead(_Counting(4, 3), target="y")
    x = torch.randn(2, 4)
    assert head(x) is x
    assert _Counting.calls == 0
    with pytest.raises(RuntimeError, match="before any forward"):
        head.compute_aux_loss()


def test_gradient_reaches_the_feature_unless_detached() -> None:
    for detach, reaches in ((False, True), (True, False)):
        x = torch.randn(3, 4, requires_grad=True)
        head = AuxiliaryHead(nn.Linear(4, 2), target=1, detach=detach)
        head(x * 1.0, target=torch.tensor([0, 1, 1]))
        head.compute_aux_loss().backward()
        assert (x.grad is not None) == reaches
        assert head.head.weight.grad is not None  # the head itself always learns


def test_weight_follows_a_schedule_that_decays_to_zero() -> None:
    head = AuxiliaryHead(nn.Linear(4, 2), target=1, aux_loss_schedule=Cosine(100))
    weights = []
    for step in (0, 50, 100, 500):
        x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
        with ml.collect(head, step=step, batch=(x, y)) as book:
            head(x)
        weights.append(book.weights["cross_entropy"])
    assert weights == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)


def test_missing_target_lists_the_batch_keys() -> None:
    head = AuxiliaryHead(nn.Linear(4, 2), target="depth")
    batch = {"image": torch.randn(2, 4), "label": torch.tensor([0, 1])}
    with (
        pytest.raises(
            ValueError,
            match=r"AuxiliaryHead could not find its target in the batch: no key 'depth'; "
            r"the keys are \['image', 'label'\]",
        ),
        ml.collect(head, batch=batch),
    ):
        head(batch["image"])


@pytest.mark.parametrize(
    ("batch", "target", "match"),
    [
        ((torch.ones(2, 4),), 1, r"index 1 is out of range for a sequence of 1"),
        ((torch.ones(2, 4), torch.ones(2)), "label", r"a key 'label' needs a mapping; got a tuple"),
        ({"label": torch.ones(2)}, 0, r"an index 0 needs a tuple or list; got a dict"),
    ],
)
def test_target_of_the_wrong_kind_for_the_batch_is_named(
    batch: Any, target: Any, match: str
) -> None:
    head = AuxiliaryHead(nn.Linear(4, 2), target=target)
    with pytest.raises(ValueError, match=match), ml.collect(head, batch=batch):
        head(torch.ones(2, 4))


def test_collector_without_a_batch_says_how_to_pass_one() -> None:
    head = AuxiliaryHead(nn.Linear(4, 2), target="y")
    with pytest.raises(RuntimeError, match=r"collect\(model, batch=batch\)"), ml.collect(head):
        head(torch.ones(2, 4))


def test_a_target_that_is_not_a_tensor_is_named() -> None:
    head = AuxiliaryHead(nn.Linear(4, 2), target="y")
    with pytest.raises(
        TypeError, match=r"the target 'y' of the batch is a list \(int, int\), not a Tensor"
    ):
        with ml.collect(head, batch={"y": [0, 1]}):
            head(torch.ones(2, 4))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"loss": "hinge"},
            ValueError,
            r"`loss` of AuxiliaryHead must be one of \{'cross_entropy'",
        ),
        ({"loss": 3}, TypeError, r"`loss` of AuxiliaryHead must be a loss name or a callable"),
        ({"target": None}, TypeError, r"`target` of AuxiliaryHead must be an int index"),
        ({"target": ""}, ValueError, r"`target` of AuxiliaryHead must be a non-empty key"),
        ({"detach": 1}, TypeError, r"`detach` of AuxiliaryHead must be a bool"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        AuxiliaryHead(nn.Linear(2, 2), **{"target": "y", **kwargs})


def test_head_must_be_a_module() -> None:
    with pytest.raises(TypeError, match=r"`head` of AuxiliaryHead must be an nn.Module"):
        AuxiliaryHead(lambda x: x, target="y")  # type: ignore[arg-type]


def test_dropped_head_mirrors_pass_through() -> None:
    x, y = torch.ones(1), torch.zeros(1)
    assert DroppedHead("AuxiliaryHead")(x, target=y) is x
    two = DroppedHead("ContrastiveHead", passes=("view1", "view2"))
    assert two(x) is x
    assert two(x, y, labels=y) == (x, y)
    assert two(x, view2=y) == (x, y)
    assert repr(two) == "DroppedHead(ContrastiveHead)"


def test_a_feature_that_is_not_a_tensor_is_named() -> None:
    head = AuxiliaryHead(nn.Linear(4, 2), target=1)
    with pytest.raises(TypeError, match=r"feeding AuxiliaryHead produced no tensor for the head"):
        head((torch.ones(2, 4),), target=torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("loss", "width", "target", "error", "match"),
    [
        ("bce", 1, torch.full((4,), 3.0), ValueError, r"0/1 labels .*; got values from 3 to 3"),
        ("cross_entropy", 3, torch.tensor([0, 1, 7, 0]), ValueError, r"3 classes.*; got 7 at"),
        ("cross_entropy", 3, torch.tensor([0, 1, 2]), ValueError, r"target shape \(3,\) int64"),
        ("cross_entropy", 3, torch.randn(4), ValueError, r"probability targets must be"),
        ("mse", 1, torch.randn(4, 3), ValueError, r"target shape \(4, 3\) float32"),
        ("l1", 1, torch.randn(5), ValueError, r"target shape \(5,\) float32"),
    ],
)
def test_a_target_that_does_not_fit_the_loss_names_the_target_and_loss(
    loss: str, width: int, target: torch.Tensor, error: type[Exception], match: str
) -> None:
    head = AuxiliaryHead(nn.Linear(3, width), target="y", loss=loss)
    with (
        pytest.raises(
            error,
            match=rf"the `target` 'y' of AuxiliaryHead does not fit its loss '{loss}': .*" + match,
        ),
        ml.collect(head, batch={"y": target}),
    ):
        head(torch.randn(4, 3))


def test_errors_of_a_loss_callable_get_a_note_naming_the_head() -> None:
    def strict(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (prediction @ target).mean()

    head = AuxiliaryHead(nn.Linear(3, 2), target="y", loss=strict)
    with pytest.raises(RuntimeError) as info, ml.collect(head, batch={"y": torch.randn(4, 2)}):
        head(torch.randn(4, 3))
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "loss 'strict' of AuxiliaryHead on its `target` 'y'" in notes
