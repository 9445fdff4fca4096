"""Gradient diagnostics: how large each loss's gradient is, how they align, who drives the update.

For the losses of a step and the shared parameters, with ``g_i`` the gradient of loss ``i`` on
the shared parameters and ``a_i`` its effective weight, the update is ``u = sum_i a_i g_i`` and:

* ``grad/norm/<name>`` = ``||g_i||`` (of the raw, unweighted loss);
* ``grad/cos/<a>|<b>`` = cosine of ``g_a`` and ``g_b`` (names in sorted order; zero if either
  gradient is zero). With more than 16 losses, only pairs of balanced losses are reported;
* ``grad/share/<name>`` = ``<a_i g_i, u> / ||u||^2``: the signed share of the update along each
  loss's contribution. Shares sum to 1; a negative share means the loss pulls against the update.

Everything is computed from the ``T x T`` Gramian of one batched Jacobian, and returned as
detached 0-dim tensors: reading them (the log writer does) is the only device sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from multiloss._validation import check_finite_float, check_loss_name, check_loss_tensor, describe
from multiloss.balancing._checks import check_shared
from multiloss.balancing._jacobian import Jacobian, per_loss_gradients
from multiloss.balancing.shared import discover

__all__ = ["MAX_COSINE_LOSSES", "gradient_diagnostics", "summarize_gradients"]

#: Above this many losses, cosines are reported only between balanced losses (the number of
#: pairs grows quadratically and forty MoE balance terms would flood the logs).
MAX_COSINE_LOSSES = 16


def summarize_gradients(
    names: Sequence[str],
    gramian: Tensor,
    coefficients: Tensor | None,
    *,
    missing: Sequence[str] = (),
    cosine_names: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """The ``grad/...`` diagnostics from the Gramian of the per-loss gradients.

    Args:
        names: One name per row of ``gramian``.
        gramian: ``(N, N)`` inner products of the raw per-loss gradients.
        coefficients: ``(N,)`` effective weights of the rows in the update, or None (no shares).
        missing: Losses without a row (they do not reach the shared parameters): norm 0.
        cosine_names: Restrict the cosine pairs to these names (default: every row).

    Example:
        >>> import torch
        >>> gram = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
        >>> out = summarize_gradients(["a", "b"], gram, torch.tensor([1.0, 1.0]))
        >>> {k: round(float(v), 3) for k, v in out.items() if "share" in k}
        {'grad/share/a': 0.2, 'grad/share/b': 0.8}
    """
    gram = gramian.detach().to(torch.float32)
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    out: dict[str, Tensor] = {}
    for name, norm in zip(names, norms.unbind(), strict=True):
        out[f"grad/norm/{name}"] = norm
    for name in missing:
        out[f"grad/norm/{name}"] = torch.zeros((), device=gram.device)
    if coefficients is not None:
        a = coefficients.detach().to(gram)
        pulled = gram @ a
        total = a @ pulled
        shares = torch.where(total > 0, a * pulled / total.clamp_min(1e-30), torch.zeros_like(a))
        for name, share in zip(names, shares.unbind(), strict=True):
            out[f"grad/share/{name}"] = share
        for name in missing:
            out[f"grad/share/{name}"] = torch.zeros((), device=gram.device)
    allowed = set(names if cosine_names is None else cosine_names)
    outer = norms[:, None] * norms[None, :]
    cosines = torch.where(outer > 0, gram / outer.clamp_min(1e-30), torch.zeros_like(gram))
    order = sorted(range(len(names)), key=lambda k: names[k])
    for x, i in enumerate(order):
        for j in order[x + 1 :]:
            if names[i] in allowed and names[j] in allowed:
                out[f"grad/cos/{names[i]}|{names[j]}"] = cosines[i, j]
    return out


def gradient_diagnostics(
    losses: Mapping[str, Tensor],
    weights: Mapping[str, float] | None = None,
    shared: Sequence[Tensor] | None = None,
) -> dict[str, Tensor]:
    """Gradient diagnostics for a plain weighted sum (what the trainer uses without a balancer).

    Computes one batched Jacobian of the losses over the shared parameters and keeps the graph,
    so the caller can still backpropagate. Costs about one backward pass per loss: call it at
    the log period only.

    Args:
        losses: Name -> raw scalar loss (with its graph).
        weights: Name -> weight in the sum (default 1.0; negative: maximized).
        shared: The shared parameters; default: those reached by more than one loss (with a
            single loss, every parameter it reaches).

    Returns:
        ``grad/norm/<name>``, ``grad/share/<name>`` and ``grad/cos/<a>|<b>`` as detached
        0-dim tensors (see the module docstring).

    Example:
        >>> import torch
        >>> trunk = torch.nn.Linear(3, 3)
        >>> h = trunk(torch.ones(2, 3))
        >>> diag = gradient_diagnostics({"a": h.sum(), "b": -h.sum()})
        >>> round(float(diag["grad/cos/a|b"]), 4)
        -1.0
    """
    if not isinstance(losses, Mapping):
        raise TypeError(
            "`losses` of gradient_diagnostics must be a mapping of name -> scalar tensor; got "
            f"{describe(losses)}"
        )
    if weights is not None and not isinstance(weights, Mapping):
        raise TypeError(
            "`weights` of gradient_diagnostics must be a mapping of loss name -> float (or "
            f"None); got {describe(weights)}"
        )
    if not losses:
        raise ValueError("gradient_diagnostics needs at least one loss; got an empty mapping")
    for name in losses:
        check_loss_name(name, "each loss name of gradient_diagnostics")
    names = sorted(losses)
    given = dict(weights or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(
            f"`weights` of gradient_diagnostics names losses that are not there: {unknown}; "
            f"the losses are {names}"
        )
    coefficient_list = [
        check_finite_float(given.get(name, 1.0), f"`weight` for loss {name!r}") for name in names
    ]
    outputs = [check_loss_tensor(losses[name], name) for name in names]
    if shared is None:
        graph = discover(outputs)
        tensors = graph.shared or graph.reached_by()
    else:
        tensors = check_shared(shared, "gradient_diagnostics") or ()
    device = outputs[0].device
    coefficients = torch.tensor(coefficient_list, dtype=torch.float32, device=device)
    if not tensors:
        zeros = torch.zeros((len(names), len(names)), device=device)
        return summarize_gradients(names, zeros, coefficients)
    blocks, _ = per_loss_gradients(outputs, tensors, retain_graph=True)
    return summarize_gradients(names, Jacobian(blocks).gramian(), coefficients)
