"""Turn a ``Plan`` into gradients: the one place where a balancer calls backward.

Three cases, each with a single pass over the trunk:

* loss weighting (``plan.shared_update is None``): one backward pass of
  ``scale * (sum_i w_i L_i + fixed + extra)`` into every parameter (and, for an ``extra`` built
  from that pass, e.g. from the per-loss gradient norms it let ``_capture`` read, a small one
  of ``scale * extra`` into the balancer's own parameters after it);
* gradient level, parameters: the shared parameters get ``scale * (update + fixed part)`` from the
  Jacobian already computed (added to ``.grad``). The other parameters (the heads) get their
  ordinary gradient from the gradients the per-loss passes took on the way
  (``_Session.take_others``), or, where those were not taken, from one more backward pass
  restricted to them (``inputs=``) that does not touch the trunk;
* gradient level, representation ``z``: one backward pass of the weighted sum, with a correction
  injected at ``z`` so that what flows into the trunk is the method's update instead of the plain
  sum's gradient (``d_z - sum_i w_i dL_i/dz``); fixed losses and everything off the ``z`` path
  keep their ordinary gradient. Where the per-loss passes at ``z`` also took the heads'
  gradients (``_heads``), the final pass starts at ``z`` with the update instead, plus the
  fixed losses, and runs no head again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multiloss.balancing._jacobian import is_unit_scale
from multiloss.balancing._plan import Plan
from multiloss.balancing.context import _Session, vector_on
from multiloss.balancing.diagnostics import MAX_COSINE_LOSSES, summarize_gradients

__all__ = ["execute"]


def _weighted_roots(session: _Session, plan: Plan) -> tuple[list[Tensor], list[Tensor | None]]:
    """The roots of one backward pass of ``scale * (sum_i w_i L_i + fixed + extra)``, and the
    gradient each starts with.

    The weighted sum is never built: the stacked balanced losses start the pass with
    ``scale * w`` as their gradient, which is what the sum's backward would hand them. The pass
    then has one node (the stack's) above the losses' graphs instead of three, and the step
    three small tensor operations fewer (2 cores: 16 us less per ``Sum()`` call warm, 31 us
    after large products; inside the benchmark's 8 ms step at T = 2 the gain is within the
    noise). The fixed losses and a tensor ``extra`` enter as a second root, summed as before.
    No root: nothing has a graph.
    """
    roots: list[Tensor] = []
    seeds: list[Tensor | None] = []
    stacked = session.stacked()
    if stacked.requires_grad:  # constant losses contribute nothing, as in plain summation
        roots.append(stacked)
        seeds.append(_seed(plan.loss_weights, session.scale, stacked.dtype))
    rest = _rest_total(session, plan, every_fixed=True)
    if rest is not None:
        roots.append(rest)
        seeds.append(None)
    return roots, seeds


def _seed(weights: Tensor, scale: float | Tensor, dtype: torch.dtype) -> Tensor:
    """``scale * weights`` in ``dtype``, always a tensor of its own: autograd may hand a seed's
    storage on as a parameter's ``.grad`` (through a view), so it must never be a tensor that
    something keeps (the cached fixed weights, the weights reported to the caller)."""
    weights = weights.detach()
    if not is_unit_scale(scale):
        weights = weights * scale
        return weights if weights.dtype == dtype else weights.to(dtype)
    return weights.to(dtype) if weights.dtype != dtype else weights.clone()


def _weighted_backward(
    session: _Session, plan: Plan, *, retain_graph: bool, inputs: list[Tensor] | None = None
) -> None:
    """One backward pass of ``scale * (sum_i w_i L_i + fixed + extra)`` (see
    :func:`_weighted_roots`), into ``inputs`` only if given."""
    roots, seeds = _weighted_roots(session, plan)
    if roots:
        torch.autograd.backward(roots, seeds, retain_graph=retain_graph, inputs=inputs)


def _weights_as_applied(session: _Session, plan: Plan) -> Tensor:
    """The balanced losses' weights as :func:`_weighted_roots` applies them: rounded to the
    losses' dtype (bf16 losses get bf16 weights), then float32."""
    dtypes = {loss.dtype for loss in session.losses}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    return plan.loss_weights.detach().to(dtype).to(torch.float32)


def _rest_total(session: _Session, plan: Plan, *, every_fixed: bool = False) -> Tensor | None:
    """What the collected gradients leave out: the fixed losses without a Jacobian row (they
    reach no shared parameter; ``every_fixed``: all of them, at the representation, which
    has no fixed rows) and ``plan.extra``, times the scale; ``None`` if nothing."""
    rest = plan.extra if isinstance(plan.extra, Tensor) else None
    in_rows = set() if every_fixed else set(session.fixed_in_rows)
    for k, (loss, weight) in enumerate(
        zip(session.fixed_losses, session.fixed_weights, strict=True)
    ):
        if k not in in_rows:
            rest = loss * weight if rest is None else rest + loss * weight
    if rest is None or not rest.requires_grad:
        return None
    return rest if is_unit_scale(session.scale) else rest * session.scale


@torch.no_grad()
def _add_collected(session: _Session, plan: Plan, fixed_coefficients: Sequence[float]) -> None:
    """The other parameters' ordinary gradient from the rows the per-loss passes took: row
    ``r``'s gradient (already at the scale) times its weight in the backward pass's total."""
    if session.collected is None:
        return
    tensors, collected = session.collected
    weights = torch.cat(
        [
            plan.loss_weights.detach().to(torch.float32),
            vector_on(fixed_coefficients, plan.loss_weights.device),
        ]
    )
    # On the CPU (where the loop runs) the weights are read for free: a weight of exactly 1
    # (Sum's, or a fixed weight of 1) then needs no product.
    host = weights.tolist() if weights.device.type == "cpu" else None
    # A gradient handed over as it is may be the very tensor that is a shared parameter's kept
    # row (autograd gives ``W + D`` one buffer for both): safe, as every read of the rows
    # (diagnostics, the update) is over by now and the Jacobian ends with the call.
    handed: set[int] = set()  # storages already given to a .grad in this call
    for tensor, pairs in zip(tensors, collected, strict=True):
        value: Tensor | None = None
        for row, grad in pairs:
            if host is not None and host[row] == 1.0:
                part = grad
            else:
                part = grad * weights[row].to(grad.dtype)
            value = part if value is None else value + part
        if value is None:
            continue
        if tensor.grad is None:
            value = _in_layout_of(tensor, value)
            # Autograd may return one buffer for several inputs (``z + b1 + b2``): two
            # parameters must never share a .grad (accumulation, clipping would act twice).
            storage = value.untyped_storage().data_ptr()
            if storage in handed:
                value = value.clone()
            handed.add(storage)
            tensor.grad = value
        else:
            tensor.grad.add_(value)


def _in_layout_of(tensor: Tensor, grad: Tensor) -> Tensor:
    """``grad`` with ``tensor``'s strides, as autograd's accumulation would store it (optimizers
    and fused kernels may expect ``.grad`` laid out like the parameter)."""
    if grad.layout != torch.strided or tensor.layout != torch.strided:
        return grad
    if grad.stride() == tensor.stride():
        return grad
    laid_out = torch.empty_strided(
        tensor.size(), tensor.stride(), dtype=grad.dtype, device=grad.device
    )
    return laid_out.copy_(grad)


@torch.no_grad()
def _add_to_grads(
    tensors: Sequence[Tensor], update: Sequence[Tensor], scale: float | Tensor, *, fresh: bool
) -> None:
    """``tensor.grad += scale * part``; ``fresh``: the parts are ours to keep (no copy).
    A new ``.grad`` gets the parameter's layout (the update from rows kept as autograd returned
    them keeps their strides, transposed for a weight used as ``x @ W.T`` through ``einsum``)."""
    for tensor, part in zip(tensors, update, strict=True):
        value = part.detach().reshape(tensor.shape).to(tensor.dtype)
        if not is_unit_scale(scale):
            value = value * scale
        elif not fresh:
            value = value.clone()  # never let .grad alias a tensor the method may keep
        if tensor.grad is None:
            tensor.grad = _in_layout_of(tensor, value)
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
    if update is None:
        capture = session.capture
        if capture is None:
            _weighted_backward(session, plan, retain_graph=retain_graph)
        else:
            with capture.armed(_weights_as_applied(session, plan), session.scale):
                _weighted_backward(session, plan, retain_graph=retain_graph)
        if callable(plan.extra):  # built from what the backward pass just computed
            extra = plan.extra()
            if extra is not None and extra.requires_grad:
                if not is_unit_scale(session.scale):
                    extra = extra * session.scale
                extra.backward(retain_graph=retain_graph)
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
        if not inputs:
            return diagnostics
        if session.collected is None:
            _weighted_backward(session, plan, retain_graph=retain_graph, inputs=inputs)
            return diagnostics
        _add_collected(session, plan, session.jacobian("parameters")[1])
        rest = _rest_total(session, plan)
        if rest is not None:
            torch.autograd.backward(rest, inputs=inputs, retain_graph=retain_graph)
        return diagnostics

    z = session.require_representation()
    if session.collected is not None:
        # The per-loss passes gave the heads their gradients: the final pass only sends the
        # update into the trunk from z, with the fixed losses' and extra's ordinary gradient.
        _add_collected(session, plan, [])
        sent = _at_representation(session, update, None)
        rest = _rest_total(session, plan, every_fixed=True)
        if rest is None:
            z.backward(sent, retain_graph=retain_graph)
        else:
            torch.autograd.backward(
                [rest, z], [torch.ones_like(rest), sent], retain_graph=retain_graph
            )
        return diagnostics
    roots, seeds = _weighted_roots(session, plan)
    correction = _at_representation(session, update, plan.loss_weights)
    torch.autograd.backward([*roots, z], [*seeds, correction], retain_graph=retain_graph)
    return diagnostics


def _at_representation(
    session: _Session, update: Tensor | list[Tensor], sent_anyway: Tensor | None
) -> Tensor:
    """What to send into the trunk at ``z``, shaped like it and at the scale: the update
    (``J^T c`` for coefficients ``c``, or the explicit tensor), less ``J^T sent_anyway`` when
    the same pass also carries the losses' plain weighted gradient (``None``: it does not)."""
    z = session.require_representation()
    jacobian, _ = session.jacobian("representation")
    if isinstance(update, Tensor):  # J^T (update - sent anyway) in one pass over the rows
        coefficients = update.to(torch.float32)
        if sent_anyway is not None:
            coefficients = coefficients - sent_anyway.to(torch.float32)
        value = jacobian.combine(coefficients)[0]
    else:
        value = update[0]
        if sent_anyway is not None:
            value = value - jacobian.combine(sent_anyway)[0]
    value = value.reshape(z.shape).to(z.dtype)
    return value if is_unit_scale(session.scale) else value * session.scale
