"""The router: float32 logits, score function, top-k selection and gate weights.

Routing decides which experts see each token, so it is kept in float32 whatever the autocast
dtype: a bfloat16 softmax over dozens of experts rounds small probabilities to zero, and the
balancing losses are computed from these same probabilities.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SCORE_FUNCTIONS",
    "Router",
    "RouterOutput",
    "router_logits",
    "score_experts",
    "select_experts",
]

#: Score functions the router supports.
SCORE_FUNCTIONS = ("softmax", "sigmoid")


def router_logits(x: Tensor, weight: Tensor, *, jitter: float = 0.0) -> Tensor:
    """Router logits ``x @ weight.T`` in float32, with autocast disabled.

    Args:
        x: Tokens, shape (T, dim), any floating dtype.
        weight: Router weight, shape (num_experts, dim).
        jitter: If > 0, multiply the router's input by noise drawn uniformly from
            ``[1 - jitter, 1 + jitter]`` (Switch Transformer's router jitter). The caller passes
            0 outside training.

    Returns:
        Logits of shape (T, num_experts), float32.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        inputs = x.float()
        if jitter > 0.0:
            noise = torch.empty_like(inputs).uniform_(1.0 - jitter, 1.0 + jitter)
            inputs = inputs * noise
        return F.linear(inputs, weight.float())


def score_experts(logits: Tensor, score: str) -> tuple[Tensor, Tensor]:
    """Per-expert scores used for selection and gating, and probabilities used for balancing.

    Args:
        logits: Float32 router logits, shape (T, E).
        score: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        ``(scores, probs)``. For softmax both are the softmax. For sigmoid the scores are the
        independent sigmoids and ``probs`` are the scores normalized to sum to one per token
        (DeepSeek-V3's normalization for its balancing loss), so the balancing losses keep the
        same meaning and the same value (1) at perfect balance.
    """
    if score == "softmax":
        probs = logits.softmax(dim=-1)
        return probs, probs
    scores = logits.sigmoid()
    total = scores.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    return scores, scores / total


def select_experts(
    scores: Tensor,
    top_k: int,
    *,
    bias: Tensor | None = None,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Top-k experts per token and their gate weights.

    Args:
        scores: Per-expert scores, shape (T, E), float32.
        top_k: How many experts each token goes to.
        bias: Optional per-expert bias (aux-loss-free balancing) added to the scores for the
            choice only; the gate weights come from the unbiased scores.
        normalize: Divide the chosen gates by their sum, so they add up to one per token.

    Returns:
        ``(index, gates)``: int64 expert indices and float32 gate weights, both (T, top_k).
    """
    chooser = scores if bias is None else scores + bias.to(scores.dtype)
    index = chooser.topk(top_k, dim=-1).indices
    gates = scores.gather(-1, index)
    if normalize:
        gates = gates / gates.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(gates.dtype).tiny)
    return index, gates


class RouterOutput(NamedTuple):
    """What the router decided for T tokens.

    Attributes:
        logits: (T, E) float32 logits.
        probs: (T, E) float32 probabilities (normalized scores for sigmoid routing).
        chosen: (T, K) int64 chosen experts.
        gates: (T, K) float32 gate weights.
    """

    logits: Tensor
    probs: Tensor
    chosen: Tensor
    gates: Tensor


class Router(nn.Module):
    """Linear router: float32 logits, softmax or sigmoid scores, top-k choice, gates.

    Args:
        dim: Token width.
        num_experts: E.
        top_k: Experts per token.
        score: ``"softmax"`` or ``"sigmoid"``.
        normalize_gates: Divide the chosen gates by their sum.
        jitter: Multiplicative input noise in training (0 = off).

    Example:
        >>> router = Router(8, num_experts=4, top_k=2)
        >>> out = router(torch.randn(3, 8))
        >>> out.chosen.shape, out.gates.dtype
        (torch.Size([3, 2]), torch.float32)
        >>> torch.allclose(out.gates.sum(-1), torch.ones(3))  # renormalized over the k chosen
        True
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        score: str = "softmax",
        normalize_gates: bool = True,
        jitter: float = 0.0,
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.score = score
        self.normalize_gates = normalize_gates
        self.jitter = jitter
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default initialization
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, tokens: Tensor, bias: Tensor | None = None) -> RouterOutput:
        """Route (T, dim) tokens; ``bias`` (aux-loss-free balancing) affects the choice only."""
        logits = router_logits(tokens, self.weight, jitter=self.jitter if self.training else 0.0)
        scores, probs = score_experts(logits, self.score)
        chosen, gates = select_experts(
            scores, self.top_k, bias=bias, normalize=self.normalize_gates
        )
        return RouterOutput(logits, probs, chosen, gates)

    def extra_repr(self) -> str:
        text = (
            f"dim={self.weight.shape[1]}, num_experts={self.weight.shape[0]}, "
            f"top_k={self.top_k}, score={self.score!r}, normalize_gates={self.normalize_gates}"
        )
        return text + (f", jitter={self.jitter:g}" if self.jitter else "")
