"""The gradient carrier: an auxiliary loss's gradient injected through an identity function.

Where a loss cannot be returned up the stack (a pipeline stage, a frozen interface that only
returns activations), the layer passes its gate weights through :func:`carry_aux_grad`: the
forward pass returns them unchanged, and the backward pass, besides passing the incoming
gradient through, hands ``scale`` to the loss as its gradient. Autograd then differentiates the
loss as if ``scale * loss`` had been added to the objective, because the gates, and so the
carrier, lie on the path from the loss the model does return to the router.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["carry_aux_grad", "set_aux_grad_scale"]


class _AuxGradCarrier(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, activation: Tensor, loss: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        ctx.loss_dtype = loss.dtype
        return activation.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad, scale.to(ctx.loss_dtype).reshape(()), None


def carry_aux_grad(activation: Tensor, loss: Tensor, scale: Tensor) -> Tensor:
    """``activation``, unchanged; its backward also backpropagates ``scale`` into ``loss``.

    Args:
        activation: A tensor on the path from the model's returned loss to the parameters the
            auxiliary loss depends on.
        loss: The (already weighted) scalar auxiliary loss.
        scale: 0-dim tensor multiplying the loss's gradient (1 / accumulation steps, times an
            AMP loss scale); a tensor, so changing it never recompiles a compiled model.

    Example:
        >>> w = torch.tensor(2.0, requires_grad=True)
        >>> out = carry_aux_grad(w * 3.0, w**2, torch.tensor(0.5))
        >>> out.backward()
        >>> float(w.grad)  # 3 from the output, 0.5 * 2w = 2 from the carried loss
        5.0
    """
    result: Tensor = _AuxGradCarrier.apply(activation, loss, scale)
    return result


def set_aux_grad_scale(model: nn.Module, scale: float | Tensor) -> int:
    """Set the carried gradient's scale on every MoE layer of ``model`` that carries one.

    Call it each step when the scale changes (gradient accumulation, an AMP loss scale).

    Returns:
        The number of layers updated.

    Example:
        >>> from multiloss.layers import MixtureOfExperts
        >>> model = torch.nn.Sequential(MixtureOfExperts(8, 16, 4, gradient_carrier=True))
        >>> set_aux_grad_scale(model, 0.25)
        1
    """
    updated = 0
    for module in model.modules():
        setter = getattr(module, "set_aux_grad_scale", None)
        if callable(setter) and getattr(module, "gradient_carrier", False):
            setter(scale)
            updated += 1
    return updated
