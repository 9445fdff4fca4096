"""The gradient carrier gives the same gradients as adding the loss to the objective."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import MixtureOfExperts, set_aux_grad_scale
from multiloss.layers.moe import carry_aux_grad


def test_carry_aux_grad_is_identity_forward_and_scales_the_loss_gradient() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    activation = w * 3.0
    out = carry_aux_grad(activation, (w**2).sum(), torch.tensor(0.5))
    torch.testing.assert_close(out, activation)
    out.sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([3.0, 3.0]) + 0.5 * 2 * w.detach())


def _model(**kwargs: object) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(8, 8),
        MixtureOfExperts(8, 16, 4, balance={"switch": 0.1, "z": 0.01}, **kwargs),  # type: ignore[arg-type]
        nn.Linear(8, 1),
    )


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_carrier_gradients_equal_adding_the_weighted_loss_to_the_total(scale: float) -> None:
    plain = _model(aux_loss_weight=2.0)
    carried = _model(aux_loss_weight=2.0, gradient_carrier=True)
    carried.load_state_dict(plain.state_dict())
    assert set_aux_grad_scale(carried, scale) == 1
    x = torch.randn(5, 8)

    with ml.collect(plain) as book:
        task = plain(x).square().mean()
    (scale * (task + book.total())).backward()  # the total already holds weight * coefficient

    with ml.collect(carried) as carried_book:
        carried_task = carried(x).square().mean()
    (scale * carried_task).backward()

    assert len(carried_book) == 0  # nothing emitted: the gradient travels with the gates
    assert carried_book.aux_modules == {"1": carried[1]}  # still registered for diagnostics
    assert set(carried_book.metrics) == {"1/switch", "1/z"}
    for (name, a), b in zip(plain.named_parameters(), carried.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_carrier_still_reports_its_loss_and_diagnostics() -> None:
    layer = MixtureOfExperts(8, 16, 4, gradient_carrier=True)
    layer(torch.randn(4, 8))
    assert float(layer.compute_aux_loss().detach()) > 0
    assert "cv" in layer.aux_loss_diagnostics()


def test_scale_is_a_tensor_buffer_set_in_place() -> None:
    layer = MixtureOfExperts(8, 16, 4, gradient_carrier=True)
    buffer = layer.aux_grad_scale
    layer.set_aux_grad_scale(torch.tensor(0.125))
    layer.set_aux_grad_scale(3)
    assert layer.aux_grad_scale is buffer
    assert float(buffer) == 3.0
    with pytest.raises(ValueError, match="`scale` of MixtureOfExperts must be a finite float"):
        layer.set_aux_grad_scale(float("inf"))


def test_models_without_carrier_layers_are_left_alone() -> None:
    assert set_aux_grad_scale(_model(), 0.5) == 0
