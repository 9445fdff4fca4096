"""What one forward call of the MoE layer keeps for its losses and diagnostics."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["RoutingCache"]


class RoutingCache(NamedTuple):
    """What one forward call keeps for its losses and diagnostics.

    Attributes:
        logits: (T, E) float32 router logits.
        probs: (T, E) float32 router probabilities (normalized scores for sigmoid routing).
        chosen: (T, K) chosen experts.
        valid: (T,) real-token mask, or None when every token is real.
        routed: (E,) int64 real assignments per expert, before capacity dropping.
        kept: (E,) int64 assignments computed, after capacity dropping.
        sequence_length: Tokens per sequence (the input's second-to-last size), or None for
            inputs without a sequence axis.
        global_counts: (E,) int64 counts over the global batch so far (``global`` balancing).
    """

    logits: Tensor
    probs: Tensor
    chosen: Tensor
    valid: Tensor | None
    routed: Tensor
    kept: Tensor
    sequence_length: int | None
    global_counts: Tensor | None
