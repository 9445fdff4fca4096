"""``EntropyRegularizer``: push a categorical distribution's entropy up or down, explicitly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_int,
    check_values_in,
)
from multiloss.aux import AuxiliaryLossModule

__all__ = ["EntropyRegularizer"]

_MODES = ("maximize", "minimize")
_OVER = ("sample", "batch")


class EntropyRegularizer(AuxiliaryLossModule):
    """Entropy of a categorical output or of attention weights, maximized or minimized.

    Place it on logits (``from_logits=True``) or on probabilities such as attention weights
    (``from_logits=False``); the input passes through unchanged. ``mode`` is required, so the
    direction is never a matter of a sign buried in a weight:

    * ``"minimize"`` (confident predictions; entropy minimization for unlabeled data,
      Grandvalet & Bengio 2004): the term ``entropy`` is ``H``.
    * ``"maximize"`` (diversity, exploration, a confidence penalty, Pereyra et al. 2017):
      auxiliary losses must be >= 0 and are minimized, so the term ``entropy_gap`` is the gap
      to the maximum entropy, ``log K - H`` (``K`` the number of categories). Its gradient is
      exactly that of ``-H``; at the uniform distribution it is 0. A weight stays positive.

    Entropies are in nats. Categories masked out (logits of ``-inf``, probabilities of exactly
    0, as in masked attention) are excluded from ``K`` row by row, so a fully uniform row over
    its allowed entries has a gap of 0.

    Args:
        mode: ``"maximize"`` or ``"minimize"``.
        from_logits: Whether the input holds logits (softmax is applied) or probabilities.
        dim: The dimension that indexes categories.
        over: ``"sample"``: the mean entropy of each distribution (per example, per head, per
            query); ``"batch"``: the entropy of the distribution averaged over everything
            but ``dim`` (maximize it to use every category across the batch without making
            each prediction uncertain, as in clustering and expert routing).
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` (see :class:`~multiloss.AuxiliaryLossModule`).

    Diagnostics: ``entropy`` (mean, nats), ``perplexity`` (``exp`` of the mean entropy: the
    effective number of categories), ``normalized_entropy`` (mean of ``H / log K``, in [0, 1]).

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import EntropyRegularizer
        >>> reg = EntropyRegularizer(mode="maximize", aux_loss_weight=0.1)
        >>> reg
        EntropyRegularizer(mode='maximize', aux_loss_weight=0.1)
        >>> with ml.collect(reg) as book:
        ...     logits = reg(torch.zeros(3, 4))  # uniform: the maximum entropy log 4
        >>> float(book["entropy_gap"])
        0.0
        >>> round(reg.aux_loss_diagnostics()["perplexity"], 4)
        4.0
    """

    def __init__(
        self,
        *,
        mode: str,
        from_logits: bool = True,
        dim: int = -1,
        over: str = "sample",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = check_choice(mode, "`mode` of EntropyRegularizer", _MODES)
        self.aux_loss_name = "entropy_gap" if self.mode == "maximize" else "entropy"
        self.from_logits = check_bool(from_logits, "`from_logits` of EntropyRegularizer")
        self.dim = check_int(dim, "`dim` of EntropyRegularizer")
        self.over = check_choice(over, "`over` of EntropyRegularizer", _OVER)

    def forward(self, x: Tensor) -> Tensor:
        check_float_tensor(x, "the input of EntropyRegularizer")
        if not -x.dim() <= self.dim < x.dim():
            raise ValueError(
                f"`dim` of EntropyRegularizer is {self.dim}, but the input has shape "
                f"{tuple(x.shape)}"
            )
        if self.use_aux_loss:
            if not self.from_logits:
                # Negative "probabilities" (logits passed by mistake) give a meaningless
                # entropy; one min/max, read at once on the CPU, at the log period elsewhere.
                check_values_in(
                    x,
                    "the input of EntropyRegularizer(from_logits=False)",
                    low=0.0,
                    high=1.0,
                    expected="hold probabilities in [0, 1] (pass from_logits=True for logits)",
                )
            self.save_for_aux_loss(x)
        return x

    def _distributions(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Probabilities, log-probabilities (0 where the probability is 0) and the allowed
        categories, all with the categories last and the rows flattened: ``(rows, K)``."""
        x = x.float().movedim(self.dim, -1)
        x = x.reshape(-1, x.shape[-1])
        if self.from_logits:
            allowed = x > float("-inf")
            log_p = torch.log_softmax(x, dim=-1)
            p = log_p.exp()
        else:
            allowed = x > 0
            p = x
            # log(0) only ever multiplies p = 0; a tiny floor keeps the product (and its
            # gradient) finite instead of 0 * -inf = nan.
            log_p = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        if self.over == "batch":
            p = p.mean(0, keepdim=True)
            allowed = allowed.any(0, keepdim=True)
            log_p = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        log_p = log_p.masked_fill(~allowed, 0.0)
        return p, log_p, allowed

    def _entropies(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Entropy of each row, and the log of its number of allowed categories."""
        p, log_p, allowed = self._distributions(x)
        entropy = -(p * log_p).sum(-1)
        log_k = allowed.sum(-1).clamp_min(1).float().log()
        return entropy, log_k

    def aux_loss_terms(self, cache: Tensor) -> Tensor:
        entropy, log_k = self._entropies(cache)
        if self.mode == "minimize":
            return entropy.clamp_min(0.0).mean()
        # H <= log K exactly; rounding can leave a gap of -1e-7 at the uniform distribution.
        return (log_k - entropy).clamp_min(0.0).mean()

    def aux_diagnostics(self, cache: Tensor) -> Mapping[str, float | Tensor]:
        with torch.no_grad():
            entropy, log_k = self._entropies(cache.detach())
            mean = entropy.mean()
            normalized = torch.where(log_k > 0, entropy / log_k.clamp_min(1e-12), 1.0)
            return {
                "entropy": mean,
                "perplexity": mean.exp(),
                "normalized_entropy": normalized.mean(),
            }

    def inference_module(self) -> nn.Module:
        """What replaces this layer in the inference model: nothing (an identity)."""
        return nn.Identity()

    def extra_repr(self) -> str:
        parts = [f"mode={self.mode!r}"]
        if not self.from_logits:
            parts.append("from_logits=False")
        if self.dim != -1:
            parts.append(f"dim={self.dim}")
        if self.over != "sample":
            parts.append(f"over={self.over!r}")
        return ", ".join([*parts, super().extra_repr()])
