"""A naive MoE written with Python loops over experts and tokens: the numerical reference.

It shares nothing with the library's routing, dispatch or products, only the parameters, so
an equality test against it checks the whole sorted/grouped pipeline end to end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from multiloss.layers import MixtureOfExperts


def _activate(h: Tensor, activation: str) -> Tensor:
    if activation in ("swiglu", "geglu"):
        half = h.shape[-1] // 2
        gate = F.silu if activation == "swiglu" else F.gelu
        return gate(h[..., :half]) * h[..., half:]
    return {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[activation](h)


def reference_routing(layer: MixtureOfExperts, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(probs, chosen, gates) computed from scratch in float32."""
    router = layer.router
    logits = tokens.float() @ router.weight.float().t()
    if router.score == "softmax":
        scores = torch.softmax(logits, dim=-1)
        probs = scores
    else:
        scores = torch.sigmoid(logits)
        probs = scores / scores.sum(-1, keepdim=True)
    chooser = scores
    if "bias" in layer.balance:
        chooser = scores + layer.expert_bias
    chosen = torch.topk(chooser, layer.top_k, dim=-1).indices
    gates = scores.gather(-1, chosen)
    if router.normalize_gates:
        gates = gates / gates.sum(-1, keepdim=True)
    return probs, chosen, gates


def kept_assignments(
    layer: MixtureOfExperts, probs: Tensor, chosen: Tensor, valid: list[bool]
) -> tuple[set[tuple[int, int]], list[int]]:
    """Which (token, choice) pairs each expert computes, and how many were routed to each."""
    tokens, top_k = chosen.shape
    capacity = None
    if layer.capacity_factor is not None:
        capacity = max(1, math.ceil(layer.capacity_factor * tokens * top_k / layer.num_experts))
    kept: set[tuple[int, int]] = set()
    routed = []
    for expert in range(layer.num_experts):
        pairs = [
            (t, k)
            for t in range(tokens)
            for k in range(top_k)
            if valid[t] and int(chosen[t, k]) == expert
        ]
        routed.append(len(pairs))
        if layer.drop_policy == "probability":
            pairs.sort(
                key=lambda pair: -float(probs[pair[0], expert].detach())
            )  # stable: ties by order
        kept.update(pairs if capacity is None else pairs[:capacity])
    return kept, routed


def reference_moe(layer: MixtureOfExperts, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """The layer's output computed with loops; differentiable w.r.t. x and the parameters."""
    tokens = x.reshape(-1, layer.dim)
    valid = [True] * tokens.shape[0] if mask is None else [bool(v) for v in mask.reshape(-1)]
    probs, chosen, gates = reference_routing(layer, tokens)
    kept, _ = kept_assignments(layer, probs, chosen, valid)
    w_in, w_out = layer.experts.w_in, layer.experts.w_out
    out = torch.zeros(tokens.shape[0], layer.dim, dtype=torch.float32)
    for expert in range(layer.num_experts):
        pairs = sorted(pair for pair in kept if int(chosen[pair]) == expert)
        if not pairs:
            continue
        rows = torch.tensor([t for t, _ in pairs])
        ks = torch.tensor([k for _, k in pairs])
        hidden = _activate(tokens[rows] @ w_in[expert].to(tokens.dtype), layer.experts.activation)
        y = hidden @ w_out[expert].to(tokens.dtype)
        out = out.index_add(0, rows, y.float() * gates[rows, ks, None])
    return out.to(x.dtype).view(x.shape)
