"""``MixtureOfExperts``: a token-wise MoE feed-forward block that keeps its router balanced."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_choice, check_finite_float
from multiloss.aux import AuxiliaryLossModule
from multiloss.collect import collecting, record
from multiloss.layers.moe import _checks
from multiloss.layers.moe.balancing import (
    LOSS_TYPES,
    all_reduce_counts,
    check_balance,
    update_expert_bias,
)
from multiloss.layers.moe.cache import RoutingCache
from multiloss.layers.moe.carrier import carry_aux_grad
from multiloss.layers.moe.diagnostics import routing_diagnostics
from multiloss.layers.moe.dispatch import DROP_POLICIES, sort_assignments
from multiloss.layers.moe.experts import ACTIVATIONS, ExpertFFN
from multiloss.layers.moe.grouped import BACKENDS, grouped_mm_supported
from multiloss.layers.moe.losses import balancing_terms
from multiloss.layers.moe.routing import SCORE_FUNCTIONS, Router, RouterOutput

__all__ = ["DEFAULT_BALANCE", "MixtureOfExperts"]

#: The default ``balance``: the Switch/GShard auxiliary loss with coefficient 0.01.
DEFAULT_BALANCE: Mapping[str, float] = MappingProxyType({"switch": 0.01})
_NAME = "MixtureOfExperts"


class MixtureOfExperts(AuxiliaryLossModule):
    """Token-wise Mixture-of-Experts feed-forward block with load balancing.

    Each token of an input (..., dim) goes to ``top_k`` of ``num_experts`` expert FFNs chosen
    by a float32 router; the output (same shape) is the gate-weighted sum of their outputs.
    Tokens are sorted by expert and the experts run as grouped (or blocked batched) matrix
    products: no Python loop over experts and no device-to-host sync in forward or backward.

    Each loss in ``balance`` is its own term, ``<layer path>/<type>`` in the logs, with weight
    ``aux_loss_weight * coefficient``:

    * ``switch``: ``E * sum_i f_i * P_i`` over this call's real tokens; 1 at perfect balance
      for any top-k (``f_i``: fraction of assignments, ``P_i``: mean router probability);
    * ``sequence``: the same per sequence (the input's second-to-last axis), averaged;
    * ``global``: ``f_i`` counted over every micro-batch of the optimizer step so far, summed
      over processes when ``torch.distributed`` is initialized; ``P_i`` local;
    * ``z``: router z-loss, mean over tokens of ``logsumexp(logits) ** 2``;
    * ``bias`` (no loss; the value is an update rate): aux-loss-free balancing. A float32
      per-expert bias (buffer ``expert_bias``) is added to the scores for the choice only and
      updated in :meth:`after_optimizer_step` by ``b_i += rate * sign(mean_load - load_i)``,
      loads summed over the step's micro-batches and over processes.

    Args:
        dim: Model width (the input's last dimension).
        hidden: Hidden width of each expert.
        num_experts: Number of experts E (>= 1).
        top_k: Experts per token, 1 <= top_k <= num_experts.
        score: ``"softmax"`` or ``"sigmoid"`` router scores.
        balance: Balancing type -> coefficient; ``{}`` trains without balancing.
        capacity_factor: None for dropless routing; otherwise each expert computes at most
            ``ceil(capacity_factor * T * top_k / E)`` assignments of a call of T tokens (padding
            included, so shapes stay static); the others are dropped (they contribute 0).
        drop_policy: What a full expert keeps: ``"probability"`` (highest router probability
            first, the default) or ``"position"`` (earliest token first). Only with a
            ``capacity_factor``: dropless routing drops nothing, so a policy there is an error.
        normalize_gates: Divide the chosen gates by their sum. Default: when ``top_k > 1``.
        jitter: Router input noise ``U(1 - jitter, 1 + jitter)`` in training (0 = off).
        activation: ``"swiglu"``, ``"geglu"``, ``"gelu"``, ``"relu"`` or ``"silu"``.
        backend: Dropless expert products: ``"auto"``, ``"grouped_mm"`` or ``"blocked"``.
        gradient_carrier: Emit no losses; inject their gradient through the gates instead,
            scaled by :meth:`set_aux_grad_scale` (their values are recorded as metrics).
        process_group: Group of the ``global``/``bias`` count reductions (None: world).
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` of :class:`multiloss.AuxiliaryLossModule`.

    Example:
        >>> import torch, multiloss as ml
        >>> moe = MixtureOfExperts(16, 32, num_experts=4, balance={"switch": 0.01, "z": 1e-3})
        >>> with ml.collect(moe) as book:
        ...     y = moe(torch.randn(2, 5, 16))
        >>> y.shape, book.weights
        (torch.Size([2, 5, 16]), {'switch': 0.01, 'z': 0.001})
        >>> sorted(moe.aux_loss_diagnostics())[:3]
        ['cv', 'dead_fraction', 'dropped_fraction']
    """

    expert_bias: Tensor
    step_counts: Tensor
    aux_grad_scale: Tensor

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_experts: int,
        top_k: int = 2,
        *,
        score: str = "softmax",
        balance: Mapping[str, float] = DEFAULT_BALANCE,
        capacity_factor: float | None = None,
        drop_policy: str | None = None,
        normalize_gates: bool | None = None,
        jitter: float = 0.0,
        activation: str = "swiglu",
        backend: str = "auto",
        gradient_carrier: bool = False,
        process_group: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        dim, hidden, num_experts, top_k = _checks.check_sizes(dim, hidden, num_experts, top_k)
        self.dim, self.hidden, self.num_experts, self.top_k = dim, hidden, num_experts, top_k
        self.balance = check_balance(balance, _NAME)
        self.capacity_factor = _checks.check_capacity_factor(capacity_factor)
        self.drop_policy = check_choice(
            "probability" if drop_policy is None else drop_policy,
            f"`drop_policy` of {_NAME}",
            DROP_POLICIES,
        )
        if drop_policy is not None and self.capacity_factor is None:
            raise ValueError(
                f"`drop_policy` of {_NAME} needs a `capacity_factor` (dropless routing drops "
                f"nothing); got drop_policy={drop_policy!r} with capacity_factor=None"
            )
        self.backend = check_choice(backend, f"`backend` of {_NAME}", BACKENDS)
        self.gradient_carrier = bool(_checks.check_bool(gradient_carrier, "gradient_carrier"))
        if self.gradient_carrier and self.aux_loss_schedule is not None:
            raise ValueError(
                f"`aux_loss_schedule` of {_NAME} cannot be combined with gradient_carrier=True "
                "(the carrier does not know the step); fold the schedule's value into "
                "set_aux_grad_scale() each step instead"
            )
        self.process_group = process_group
        normalize = _checks.check_bool(normalize_gates, "normalize_gates", allow_none=True)
        self.router = Router(
            dim,
            num_experts,
            top_k,
            score=check_choice(score, f"`score` of {_NAME}", SCORE_FUNCTIONS),
            normalize_gates=top_k > 1 if normalize is None else normalize,
            jitter=_checks.check_jitter(jitter),
        )
        self.experts = ExpertFFN(
            dim,
            hidden,
            num_experts,
            check_choice(activation, f"`activation` of {_NAME}", ACTIVATIONS),
        )
        if "bias" in self.balance:
            self.register_buffer("expert_bias", torch.zeros(num_experts, dtype=torch.float32))
        # Real assignments per expert since the last optimizer step (global / bias balancing).
        self.register_buffer("step_counts", torch.zeros(num_experts, dtype=torch.int64), False)
        self.register_buffer("aux_grad_scale", torch.ones((), dtype=torch.float32), False)

    # -- the AuxiliaryLossModule contract -------------------------------------------------------
    def aux_loss_coefficients(self) -> Mapping[str, float]:
        return {kind: value for kind, value in self.balance.items() if kind in LOSS_TYPES}

    def aux_loss_terms(self, cache: RoutingCache) -> Mapping[str, Tensor]:
        return balancing_terms(self.balance, cache)

    def aux_diagnostics(self, cache: RoutingCache) -> Mapping[str, float | Tensor]:
        return routing_diagnostics(cache, self.expert_bias if "bias" in self.balance else None)

    def save_for_aux_loss(self, cache: Any, *, emit: bool = True) -> None:
        # With the carrier, the gradient is injected through the gates: emitting the loss too
        # would count it twice. The cache still serves compute_aux_loss() and diagnostics.
        super().save_for_aux_loss(cache, emit=emit and not self.gradient_carrier)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Update the aux-loss-free bias from the step's (global) loads; reset the counts."""
        if "bias" in self.balance:
            counts = all_reduce_counts(self.step_counts, self.process_group)
            update_expert_bias(self.expert_bias, counts, self.balance["bias"])
        self.step_counts.zero_()

    @torch.no_grad()
    def reset_accumulation(self) -> None:
        """Forget the counts of a skipped step."""
        self.step_counts.zero_()

    @torch.no_grad()
    def set_aux_grad_scale(self, scale: float | Tensor) -> None:
        """Scale of the carried gradient (``gradient_carrier=True``); set in place, no recompile."""
        if isinstance(scale, Tensor):
            self.aux_grad_scale.copy_(scale.detach().reshape(()))
        else:
            self.aux_grad_scale.fill_(check_finite_float(scale, f"`scale` of {_NAME}"))

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Route each token of ``x`` (..., dim) to its experts.

        Args:
            x: Tokens, floating point, last dimension ``dim``.
            mask: Optional bool (or 0/1 integer) tensor of shape ``x.shape[:-1]``; True marks
                real tokens. Padding tokens count in no statistic and no loss, are not
                computed, and their output is 0.
        """
        _checks.check_input(x, mask, self.dim, needs_sequence="sequence" in self.balance)
        tokens = x.reshape(-1, self.dim)
        if tokens.shape[0] == 0:
            return x.new_zeros(x.shape)
        valid = None if mask is None else mask.reshape(-1) != 0
        route = self.router(tokens, self.expert_bias if "bias" in self.balance else None)
        capacity = self._capacity(tokens.shape[0])
        priority = None
        if capacity is not None and self.drop_policy == "probability":
            priority = route.probs.detach().gather(-1, route.chosen)
        sorted_ = sort_assignments(route.chosen, valid, self.num_experts, priority)

        compute = _compute_dtype(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            experts: tuple[Tensor, Tensor] = self.experts(
                tokens.to(compute),
                sorted_,
                self.top_k,
                capacity=capacity,
                grouped=capacity is None and self._use_grouped(x.device, compute),
                padded=valid is not None,
            )
        outputs, kept = experts
        gates = self._track_and_cache(route, valid, sorted_.counts, kept, x)
        # Gate scaling and the sum over the k choices in float32, then the compute dtype.
        combined = (outputs.to(torch.float32) * gates[..., None]).sum(dim=1)
        return combined.to(compute).view(*x.shape[:-1], self.dim)

    def _track_and_cache(
        self, route: RouterOutput, valid: Tensor | None, routed: Tensor, kept: Tensor, x: Tensor
    ) -> Tensor:
        """Accumulate the step's counts, keep the cache; returns the gates (carrier attached)."""
        uses_global = "global" in self.balance and self.use_aux_loss
        if self.training and (uses_global or "bias" in self.balance):
            self.step_counts.add_(routed)
        if not self.use_aux_loss:
            return route.gates
        global_counts = None
        if uses_global:
            global_counts = (
                all_reduce_counts(self.step_counts, self.process_group)
                if self.training
                else routed  # evaluation: no step to accumulate over, no collective
            )
        cache = RoutingCache(
            logits=route.logits,
            probs=route.probs,
            chosen=route.chosen,
            valid=valid,
            routed=routed,
            kept=kept,
            sequence_length=x.shape[-2] if x.dim() >= 3 else None,
            global_counts=global_counts,
        )
        self.save_for_aux_loss(cache)
        return self._carry(cache, route.gates) if self.gradient_carrier else route.gates

    def _carry(self, cache: RoutingCache, gates: Tensor) -> Tensor:
        terms = self.aux_loss_terms(cache)
        if not terms:
            return gates
        coefficients = self.aux_loss_coefficients()
        weighted = torch.stack([coefficients[kind] * value for kind, value in terms.items()])
        if collecting():
            for kind, value in terms.items():
                record(kind, value.detach(), module=self)
        loss = self.aux_loss_weight * weighted.sum()
        return carry_aux_grad(gates, loss, self.aux_grad_scale)

    def _capacity(self, tokens: int) -> int | None:
        if self.capacity_factor is None:
            return None
        return max(1, math.ceil(self.capacity_factor * tokens * self.top_k / self.num_experts))

    def _use_grouped(self, device: torch.device, dtype: torch.dtype) -> bool:
        if self.backend == "blocked":
            return False
        index = device.index if device.index is not None else -1
        supported = bool(
            grouped_mm_supported(
                device.type, index, dtype, self.experts.widths, torch.compiler.is_compiling()
            )
        )
        if self.backend == "grouped_mm" and not supported:
            raise ValueError(
                f"`backend` of {_NAME} is 'grouped_mm', but torch._grouped_mm cannot run "
                f"sync-free for {dtype} on {device} with widths {self.experts.widths} (rows "
                "must be multiples of 16 bytes); use backend='auto' or 'blocked'"
            )
        return supported

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> nn.Module:
        # `.half()` / `.to(dtype)` must not round the float32 state: move it, keep its dtype.
        saved = {
            name: buffer
            for name in ("expert_bias", "aux_grad_scale")
            if (buffer := self._buffers.get(name)) is not None
        }
        super()._apply(fn, recurse)
        for name, old in saved.items():
            new = self._buffers[name]
            if new is not None and new.dtype != torch.float32:
                self._buffers[name] = old.to(device=new.device)
        return self

    def extra_repr(self) -> str:
        parts = [f"balance={self.balance}"]
        if self.capacity_factor is not None:
            parts.append(f"capacity_factor={self.capacity_factor:g}")
            parts.append(f"drop_policy={self.drop_policy!r}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        if self.gradient_carrier:
            parts.append("gradient_carrier=True")
        parts.append(super().extra_repr())
        return ", ".join(parts)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for ``x``'s device, else ``x.dtype``."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype
