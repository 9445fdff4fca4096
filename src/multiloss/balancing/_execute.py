"""Turn a ``Plan`` into gradients: the one place where a balancer calls backward.

Three cases, each with a single pass over the trunk:

* loss weighting (``plan.shared_update is None``): one backward pass of
  ``scale * (sum_i w_i L_i + fixed + extra)`` into every parameter;
* gradient level, parameters: the shared parameters get ``scale * (update + fixed part)`` from the
  Jacobian already computed (added to ``.grad``); one more backward pass restricted to the other
  parameters (``inputs=``) gives the heads their ordinary gradient without touching the trunk;
* gradient level, representation ``z``: one backward pass of the weighted sum, with a correction
  injected at ``z`` so that what flows into the trunk is the method's update instead of the plain
  sum's gradient (``d_z - sum_i w_i dL_i/dz``); fixed losses and everything off the ``z`` path
  keep their ordinary gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multiloss.balancing._jacobian import _stack, is_unit_scale
from multiloss.balancing._plan import Plan
from multiloss.balancing.context import _Session, vector_on
from multiloss.balancing.diagnostics import MAX_COSINE_LOSSES, summarize_gradients

__all__ = ["execute"]


def _weighted_total(session: _Session, plan: Plan) -> Tensor:
    stacked = _stack(session.losses)
    total = (stacked * plan.loss_weights.detach().to(stacked.dtype)).sum()
    for loss, weight in zip(session.fixed_losses, session.fixed_weights, strict=True):
        total = total + loss * weight
    if plan.extra is not None:
        total = total + plan.extra
    if not is_unit_scale(session.scale):
        total = total * session.scale
    return total


@torch.no_grad()
def _add_to_grads(
    tensors: Sequence[Tensor], update: Sequence[Tensor], scale: float | Tensor, *, fresh: bool
) -> None:
    """``tensor.grad += scale * part``; ``fresh``: the parts are ours to keep (no copy)."""
    for tensor, part in zip(tensors, update, strict=True):
        value = part.detach().reshape(tensor.shape).to(tensor.dtype)
        if not is_unit_scale(scale):
            value = value * scale
        elif not fresh:
            value = value.clone()  # never let .grad alias a tensor the method may keep
        if tensor.grad is None:
            tensor.grad = value
        else:
            tensor.grad.add_(value)


def _diagnose(session: _Session, plan: Plan) -> dict[str, Tensor]:
    """Diagnostics over the shared parameters, before the graph is freed."""
    tensors = session.diagnostic_tensors()
    names = list(session.names)
    balanced = plan.shared_update if isinstance(plan.shared_update, Tensor) else None
    if plan.shared_update is None:
        balanced = plan.loss_weights
    if not tensors:
        return {}
    jacobian, fixed_coefficients = session.jacobian("parameters")
    rows = names + session.fixed_row_names
    all_names = names + list(session.fixed_names)
    missing = [name for name in all_names if name not in rows]
    coefficients = None
    if balanced is not None:
        fixed = vector_on(fixed_coefficients, balanced.device)
        coefficients = torch.cat([balanced.detach().to(torch.float32), fixed])
    cosine = None if len(all_names) <= MAX_COSINE_LOSSES else names
    return summarize_gradients(
        rows, jacobian.gramian(), coefficients, missing=missing, cosine_names=cosine
    )


def execute(
    session: _Session, plan: Plan, own_parameters: Sequence[Tensor], *, retain_graph: bool
) -> dict[str, Tensor]:
    """Write the gradients ``plan`` asks for; return the diagnostics if the session wants them."""
    diagnostics: dict[str, Tensor] = {}
    update = plan.shared_update
    wants_early = update is None or plan.level == "representation"
    if session.diagnostics and wants_early:
        diagnostics = _diagnose(session, plan)
    total = _weighted_total(session, plan)
    if update is None:
        if total.requires_grad:
            total.backward(retain_graph=retain_graph)
        return diagnostics

    if plan.level == "parameters":
        shared = session.shared()
        if session.diagnostics:
            diagnostics = _diagnose(session, plan)
        if shared:
            jacobian, fixed_coefficients = session.jacobian("parameters")
            balanced = jacobian.take(slice(0, len(session.names)))
            fresh = isinstance(update, Tensor)
            parts = balanced.combine(update) if isinstance(update, Tensor) else list(update)
            if fixed_coefficients:
                fresh = True
                extra_rows = jacobian.take(slice(len(session.names), jacobian.rows))
                coefficients = vector_on(fixed_coefficients, extra_rows.factors.device)
                fixed = extra_rows.combine(coefficients)
                parts = [p + f for p, f in zip(parts, fixed, strict=True)]
            _add_to_grads(shared, parts, session.scale, fresh=fresh)
        inputs = list(session.others()) + [p for p in own_parameters if p.requires_grad]
        if inputs and total.requires_grad:
            torch.autograd.backward(total, inputs=inputs, retain_graph=retain_graph)
        return diagnostics

    z = session.require_representation()
    jacobian, _ = session.jacobian("representation")
    if isinstance(update, Tensor):  # J^T update - J^T weights in one pass over the rows
        difference = update.to(torch.float32) - plan.loss_weights.to(torch.float32)
        correction = jacobian.combine(difference)[0]
    else:
        correction = update[0] - jacobian.combine(plan.loss_weights)[0]
    correction = correction.reshape(z.shape).to(z.dtype)
    if not is_unit_scale(session.scale):
        correction = correction * session.scale
    if total.requires_grad:
        torch.autograd.backward(
            [total, z], [torch.ones_like(total), correction], retain_graph=retain_graph
        )
    else:
        z.backward(correction, retain_graph=retain_graph)
    return diagnostics
