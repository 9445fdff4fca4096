"""``GradientReversal``: identity forward, reversed and scaled gradient, schedules, compile."""

from __future__ import annotations

import math

import pytest
import torch

import multiloss as ml
from multiloss.layers.reversal import GradientReversal
from multiloss.schedules import LinearWarmup, SigmoidRamp


def _grad_through(layer: GradientReversal, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (layer(x) * torch.arange(1.0, x.numel() + 1).reshape(x.shape)).sum().backward()
    assert x.grad is not None
    return x.grad


def test_forward_is_identity_and_backward_is_minus_scale_times_grad() -> None:
    x = torch.randn(3, 2)
    layer = GradientReversal(0.3)
    torch.testing.assert_close(layer(x.clone().requires_grad_(True)), x)
    expected = -0.3 * torch.arange(1.0, 7.0).reshape(3, 2)
    torch.testing.assert_close(_grad_through(layer, x), expected)


def test_adversary_ascends_while_features_descend() -> None:
    """Summed losses, one backward: the head minimizes, the features maximize its loss."""
    torch.manual_seed(0)
    features, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    loss = (head(GradientReversal(1.0)(features(x))) - y).pow(2).mean()
    loss.backward()
    plain_features = torch.nn.Linear(4, 4)
    plain_features.load_state_dict(features.state_dict())
    plain = (head(plain_features(x)) - y).pow(2).mean()
    grads = torch.autograd.grad(plain, list(plain_features.parameters()))
    for reversed_grad, grad in zip((p.grad for p in features.parameters()), grads, strict=True):
        torch.testing.assert_close(reversed_grad, -grad)


def test_schedule_reads_the_step_of_the_open_collector() -> None:
    layer = GradientReversal(LinearWarmup(100))
    x = torch.ones(2)
    with ml.collect(step=25):
        grad = _grad_through(layer, x)
    torch.testing.assert_close(grad, torch.tensor([-0.25, -0.5]))


def test_settable_step_wins_and_dann_ramp_matches_the_paper() -> None:
    layer = GradientReversal(SigmoidRamp(1000))
    layer.step = 500
    p = 0.5
    assert layer.current_scale() == pytest.approx(2.0 / (1.0 + math.exp(-10 * p)) - 1.0)
    with ml.collect(step=0):
        assert layer.current_scale() == pytest.approx(0.9866142981514305)
    layer.step = None
    with ml.collect(step=0):
        assert layer.current_scale() == 0.0


def test_schedule_without_a_step_is_an_error() -> None:
    layer = GradientReversal(SigmoidRamp(10))
    with pytest.raises(RuntimeError, match="depends on the step, but no step is known"):
        layer(torch.ones(2, requires_grad=True))


def test_inference_needs_no_step() -> None:
    layer = GradientReversal(SigmoidRamp(10))
    x = torch.ones(2)
    assert layer(x) is x
    with torch.no_grad():
        assert layer(x.requires_grad_(True)) is x


@pytest.mark.parametrize(
    ("scale", "error", "match"),
    [
        (-1.0, ValueError, r"`scale` of GradientReversal must be >= 0 .*got -1.0"),
        ("big", TypeError, "`scale` of GradientReversal must be a float"),
    ],
)
def test_bad_scale(scale: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GradientReversal(scale)  # type: ignore[arg-type]


def test_negative_schedule_value_is_an_error() -> None:
    layer = GradientReversal(lambda step: -0.5)
    layer.step = 3
    with pytest.raises(ValueError, match=r"must stay >= 0; got -0\.5 at step 3"):
        layer.current_scale()


def test_bad_step() -> None:
    with pytest.raises(ValueError, match="`step` of GradientReversal must be >= 0; got -1"):
        GradientReversal().step = -1


def test_half_precision_gradient_keeps_its_dtype() -> None:
    x = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    GradientReversal(2.0)(x).sum().backward()
    assert x.grad is not None
    assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad, torch.full((3,), -2.0, dtype=torch.bfloat16))


def test_compiled_ramp_does_not_recompile() -> None:
    layer = GradientReversal(LinearWarmup(10))
    counter = {"compiles": 0}

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> object:
        counter["compiles"] += 1
        return gm.forward

    @torch.compile(backend=backend)
    def f(x: torch.Tensor) -> torch.Tensor:
        return (layer(x) * 2).sum()

    for step in (2, 5):
        layer.step = step
        x = torch.ones(2, requires_grad=True)
        f(x).backward()
        assert x.grad is not None
        torch.testing.assert_close(x.grad, torch.full((2,), -2.0 * step / 10))
    assert counter["compiles"] <= 2  # the graph before and after the break, compiled once


def test_repr_shows_the_scale() -> None:
    assert repr(GradientReversal(SigmoidRamp(100))) == (
        "GradientReversal(scale=SigmoidRamp(steps=100, gamma=10.0, high=1.0))"
    )


def test_a_nan_scale_names_scale() -> None:
    with pytest.raises(
        ValueError, match="`scale` of GradientReversal must be a finite float; got nan"
    ):
        GradientReversal(float("nan"))
