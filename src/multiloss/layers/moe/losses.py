"""The balancing losses, as pure functions of the router's outputs.

All of them ignore padding: ``valid`` (a bool vector over tokens, or None for "all real")
removes padded tokens from every count, mean and average. The load-balancing losses share one
normalization, ``E * sum_i f_i * P_i`` with ``f_i`` the fraction of the assignments routed to
expert ``i`` and ``P_i`` its mean router probability, which equals 1 at perfect balance for
any top-k and any number of experts (and is at least 1 when ``f = P``, by Cauchy-Schwarz).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from multiloss.layers.moe.cache import RoutingCache

__all__ = [
    "balance_loss",
    "balancing_terms",
    "expert_counts",
    "mean_probs",
    "sequence_balance_loss",
    "z_loss",
]


def _token_weights(valid: Tensor | None, like: Tensor) -> Tensor:
    """Float32 1/0 weight per token (1 everywhere without a mask)."""
    if valid is None:
        return torch.ones(like.shape[0], dtype=torch.float32, device=like.device)
    return valid.to(torch.float32)


def expert_counts(index: Tensor, valid: Tensor | None, num_experts: int) -> Tensor:
    """How many real assignments each expert received: int64 vector of length ``num_experts``.

    Uses ``scatter_add_`` into a tensor of static size rather than ``bincount``, whose output
    size depends on the data (a device-to-host sync on accelerators).
    """
    flat = index.reshape(-1)
    ones = torch.ones_like(flat)
    if valid is not None:
        ones = valid.to(flat.dtype)[:, None].expand(-1, index.shape[-1]).reshape(-1)
    return torch.zeros(num_experts, dtype=torch.int64, device=index.device).scatter_add_(
        0, flat, ones
    )


def mean_probs(probs: Tensor, valid: Tensor | None) -> Tensor:
    """``P_i``: mean router probability of each expert over the real tokens."""
    weights = _token_weights(valid, probs)
    return (probs * weights[:, None]).sum(dim=0) / weights.sum().clamp_min(1.0)


def balance_loss(counts: Tensor, probs_mean: Tensor) -> Tensor:
    """``E * sum_i f_i * P_i`` with ``f_i = counts_i / sum(counts)``.

    ``counts`` may be local (``switch``) or accumulated over a global batch (``global``); the
    loss is 0 when there are no counts at all (a batch made only of padding).
    """
    counts = counts.to(torch.float32)
    fraction = counts / counts.sum().clamp_min(1.0)
    return probs_mean.numel() * (fraction * probs_mean).sum()


def sequence_balance_loss(
    probs: Tensor, index: Tensor, valid: Tensor | None, sequence_length: int
) -> Tensor:
    """DeepSeek-V3's sequence-wise loss: the balance loss per sequence, averaged.

    Args:
        probs: Router probabilities (T, E) with tokens laid out sequence after sequence.
        index: Chosen experts (T, K).
        valid: Real-token mask (T,) or None.
        sequence_length: Tokens per sequence; T must be a multiple of it.

    Sequences made only of padding do not take part in the average.
    """
    tokens, experts = probs.shape
    sequences = tokens // sequence_length
    weights = _token_weights(valid, probs)
    # Per-sequence counts with one scatter into a (sequences * E) vector.
    sequence_of = torch.arange(tokens, device=probs.device) // sequence_length
    slots = (sequence_of[:, None] * experts + index).reshape(-1)
    counts = torch.zeros(sequences * experts, dtype=torch.float32, device=probs.device)
    counts = counts.scatter_add_(0, slots, weights[:, None].expand_as(index).reshape(-1))
    counts = counts.view(sequences, experts)
    real = weights.view(sequences, sequence_length).sum(dim=1)  # real tokens per sequence
    fraction = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    p_mean = (probs * weights[:, None]).view(sequences, sequence_length, experts).sum(dim=1)
    p_mean = p_mean / real[:, None].clamp_min(1.0)
    per_sequence = experts * (fraction * p_mean).sum(dim=1)
    present = (real > 0).to(torch.float32)
    return (per_sequence * present).sum() / present.sum().clamp_min(1.0)


def z_loss(logits: Tensor, valid: Tensor | None) -> Tensor:
    """Router z-loss (ST-MoE): mean over real tokens of ``logsumexp(logits) ** 2``."""
    weights = _token_weights(valid, logits)
    lse = torch.logsumexp(logits, dim=-1)
    return (lse.square() * weights).sum() / weights.sum().clamp_min(1.0)


def balancing_terms(kinds: Iterable[str], cache: RoutingCache) -> dict[str, Tensor]:
    """The raw loss term of each balancing type in ``kinds`` (``bias`` has none)."""
    terms: dict[str, Tensor] = {}
    p_mean = mean_probs(cache.probs, cache.valid)
    for kind in kinds:
        if kind == "switch":
            terms[kind] = balance_loss(cache.routed, p_mean)
        elif kind == "global":
            counts = cache.routed if cache.global_counts is None else cache.global_counts
            terms[kind] = balance_loss(counts, p_mean)
        elif kind == "sequence":
            # The layer checks the input has a sequence axis when 'sequence' is on.
            length = cache.sequence_length if cache.sequence_length is not None else 1
            terms[kind] = sequence_balance_loss(cache.probs, cache.chosen, cache.valid, length)
        elif kind == "z":
            terms[kind] = z_loss(cache.logits, cache.valid)
    return terms
