"""``GradNorm``: gradient normalization (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_finite_float, describe
from multiloss.balancing._arrays import add_to_grad, float32_tensor, floats_on_host
from multiloss.balancing._plan import Extra
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["GradNorm"]


class GradNorm(LossWeighting):
    """Learn loss weights so each task's gradient norm tracks its relative training rate.

    Paper, Algorithm 1: with learnable weights ``w_i`` (start at 1), ``G_i = ||grad_W w_i L_i||``
    on the weights ``W`` of the last shared layer, ``r_i = (L_i / L_i(0)) / mean_j(L_j /
    L_j(0))``, the weights descend ``L_grad = sum_i |G_i - mean(G) * r_i ** alpha|`` with the
    target held constant, while the model descends ``sum_i w_i L_i``. After every optimizer
    step the weights are renormalized to sum to the number of losses (and kept positive).
    ``alpha = 1.5`` is the paper's value for NYUv2; ``L_i(0)`` is the first loss seen. The
    authors released no code; the defaults follow the paper (and agree with LibMTL's
    re-implementation, which also trains the weights with the model's optimizer).

    Cost: the per-loss gradients of one layer (one batched backward pass that stops at that
    layer), plus the ordinary backward pass. ``layer="representation"`` measures the gradient
    norms on the marked shared representation instead (LibMTL's ``rep_grad`` option): cheaper,
    but not the paper's choice. When each head reads the representation for one loss only, the
    norms are read from the ordinary backward pass as it passes the heads, and no per-loss pass
    runs at all.

    The weights are parameters: an optimizer must step them (the trainer adds
    ``parameter_group()``; the paper updates them with the network's optimizer).

    Args:
        alpha: Strength of the pull towards equal training rates (0: equal gradient norms).
        layer: ``"last"`` (the last shared layer's weight, found from the graph), an
            ``nn.Module`` or a list of parameters, or ``"representation"``. Every balanced loss
            must be computed through it (checked at the first call).
        lr: Learning rate of the weights in ``parameter_group()`` (None: the optimizer's).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> trunk, heads = torch.nn.Linear(3, 3), torch.nn.ModuleList(
        ...     torch.nn.Linear(3, 1) for _ in range(2))
        >>> h = trunk(torch.ones(4, 3))
        >>> gradnorm = GradNorm()
        >>> gradnorm.backward({"a": heads[0](h).pow(2).mean(), "b": heads[1](h).abs().mean()})
        {'a': 1.0, 'b': 1.0}
        >>> gradnorm.weights.grad is not None  # L_grad's gradient, for the optimizer
        True
    """

    per_loss_state = True
    requires_positive_losses = True

    def __init__(
        self,
        *,
        alpha: float = 1.5,
        layer: str | nn.Module | Sequence[Tensor] = "last",
        lr: float | None = None,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(balance=balance)
        self.alpha = check_finite_float(alpha, "`alpha` of GradNorm", min_value=0.0)
        # Parameters of a user-given layer are kept in a tuple, not as a submodule, so they do
        # not become this balancer's parameters (and are not optimized or saved twice).
        self._layer: tuple[Tensor, ...] = ()
        if isinstance(layer, str):
            if layer not in ("last", "representation"):
                raise ValueError(
                    "`layer` of GradNorm must be 'last', 'representation', an nn.Module or a list "
                    f"of parameters; got {layer!r}"
                )
            self.layer = layer
        else:
            params: list[Any]
            if isinstance(layer, nn.Module):
                params = list(layer.parameters())
            elif isinstance(layer, Iterable) and not isinstance(layer, Tensor | Mapping):
                params = list(layer)
            else:
                raise TypeError(
                    "`layer` of GradNorm must be 'last', 'representation', an nn.Module or a list "
                    f"of parameters; got {describe(layer)}"
                )
            for position, param in enumerate(params):
                if not isinstance(param, Tensor):
                    raise TypeError(
                        "`layer` of GradNorm, given as a list, must hold parameters (tensors); "
                        f"item {position} is {describe(param)}"
                    )
            self._layer = tuple(p for p in params if p.requires_grad)
            if not self._layer:
                raise ValueError(
                    "`layer` of GradNorm has no parameter that requires grad; got "
                    f"{describe(layer)}"
                )
            self.layer = "given"
        self._layer_checked = False  # whether every balanced loss reaches the given layer
        if lr is not None:
            self.parameter_lr = check_finite_float(
                lr, "`lr` of GradNorm", min_value=0.0, strict_min=True
            )
        self.weights: nn.Parameter
        self.initial: Tensor
        self.started: Tensor
        # The last G_i / w_i and targets measured, for the logs (not state: not saved); floats
        # where computed on the host.
        self._measured: dict[str, Tensor | list[float]] = {}
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        count = len(names)
        self.weights = nn.Parameter(torch.ones(count, device=device))
        self.register_buffer("initial", torch.ones(count, device=device))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool, device=device))

    def _norms(self, ctx: BalanceContext) -> Tensor:
        """``||grad_W (fixed weight * L_i)||`` per loss, detached."""
        if self.layer == "representation":
            jacobian = ctx.jacobian("representation")
        elif self.layer == "given":
            jacobian = ctx.jacobian_of(self._layer)
        else:
            jacobian = ctx.jacobian_of(ctx.last_shared_parameters())
        return jacobian.norms().detach()

    def _check_layer(self, ctx: BalanceContext) -> None:
        """At the first call: every balanced loss must reach the given layer (else its norm
        is 0 for ever, and the weights drift or never move). One walk of the graph."""
        missing = ctx.names_not_reaching(self._layer)
        if missing:
            raise ValueError(
                f"`layer` of GradNorm ({len(self._layer)} parameter tensors) is not reached by "
                f"the balanced losses {missing} (the balanced losses are {list(ctx.names)}): "
                "their gradient norm on it would be 0. Pass a layer of the trunk every balanced "
                "loss is computed through (or layer='last'), or leave those losses out of "
                "`balance=`"
            )
        self._layer_checked = True

    def _on_host(self) -> bool:
        """Whether the state lives on the CPU: then the per-step arithmetic on ``T`` numbers
        runs on Python floats (as FAMO's), written through kept memoryviews of the buffers. As
        tensor operations it was about 0.3 ms of a 9 ms step (T = 2, 2 cores)."""
        return floats_on_host(self.weights)

    def factors(self, ctx: BalanceContext) -> Tensor:
        self.require_at_least(ctx, 0.0, "the relative loss L / L(0) needs L >= 0")
        if self.layer == "given" and not self._layer_checked and ctx.num_losses > 1:
            self._check_layer(ctx)
        if self._on_host() and ctx.device.type == "cpu":
            if not self.started.tolist():  # L(0): the first values seen
                floats = ctx.value_floats()
                initial = ctx.values.tolist() if floats is None else floats
                self._host.write("initial", self.initial, initial)
                self.started.fill_(True)
            return self.weights.detach().clone()
        with torch.no_grad():
            self.initial.copy_(torch.where(self.started, self.initial, ctx.values))
            self.started.fill_(True)
        return self.weights.detach().clone()

    def _every_loss_needs_a_graph(self) -> bool:
        return True  # each loss's gradient norm on the layer is what it weighs by

    def extra_loss(self, ctx: BalanceContext) -> Extra | None:
        if ctx.num_losses < 2:
            return None  # a single weight is renormalized to 1: nothing to learn
        host = self._on_host() and self._writes_gradient_itself(ctx, self.weights)
        values = ctx.value_floats() if host else None
        if values is not None:
            # On the host, L_grad's gradient in closed form, written after the backward pass:
            # no tensor arithmetic and no backward pass of its own (about 0.3 ms of a 9 ms
            # step at T = 2 on 2 cores, with the norms at the representation).
            if self.layer == "representation":
                floats = ctx.norm_floats_after_backward()
                if floats is not None:
                    return partial(self._write_gradient, values, floats, ctx.gradient_scale)
            norms = self._norms(ctx).tolist()
            return partial(self._write_gradient, values, lambda: norms, ctx.gradient_scale)
        tensor_values = ctx.values
        if self.layer == "representation":
            # The norms at z come from the model's own backward pass where the heads tell the
            # losses apart: L_grad is then built (and differentiated) right after that pass.
            later = ctx.norms_after_backward()
            if later is not None:
                return lambda: self._weight_loss(tensor_values, later())
        return self._weight_loss(tensor_values, self._norms(ctx))

    def _write_gradient(
        self, values: list[float], norms_of: Callable[[], list[float]], scale: float | Tensor
    ) -> None:
        """``weights.grad += scale * dL_grad/dw``, with ``dL_grad/dw_i = sign(w_i n_i - t_i)
        n_i`` (``G_i = w_i n_i``; the target ``t_i`` held constant, as in the paper; the sign
        of 0 is 0, as autograd's derivative of ``abs``)."""
        norms = norms_of()
        targets = self._targets(values, norms)
        factor = float(scale)
        grad = []
        for weight, norm, target in zip(self.weights.tolist(), norms, targets, strict=True):
            gap = weight * norm - target
            grad.append(((gap > 0) - (gap < 0)) * norm * factor)
        self._measured = {"norm": norms, "target": targets}
        add_to_grad(self.weights, grad)

    def _weight_loss(self, values: Tensor, norms: Tensor) -> Tensor:
        """``L_grad``: the distance of each ``G_i`` from its target, the target held constant."""
        if self._on_host() and values.device.type == "cpu" and norms.device.type == "cpu":
            target = float32_tensor(self._targets(values.tolist(), norms.tolist()))
        else:
            with torch.no_grad():
                relative = values / self.initial.clamp_min(1e-12)
                rate = relative / relative.mean().clamp_min(1e-12)
                target = (self.weights * norms).mean() * rate.pow(self.alpha)
        self._measured = {"norm": norms.detach(), "target": target.detach()}
        return (self.weights * norms - target).abs().sum()

    def _targets(self, values: list[float], norms: list[float]) -> list[float]:
        """``mean(G) * r_i ** alpha`` on floats (the tensor code above, in float64)."""
        weights = self.weights.detach().tolist()
        relative = [v / max(i, 1e-12) for v, i in zip(values, self.initial.tolist(), strict=True)]
        mean_rate = max(sum(relative) / len(relative), 1e-12)
        mean_norm = sum(w * n for w, n in zip(weights, norms, strict=True)) / len(norms)
        return [mean_norm * (r / mean_rate) ** self.alpha for r in relative]

    def on_optimizer_step(self) -> None:
        if self._names is None:
            return
        if self._on_host():  # no grad mode to switch: memoryview writes are not recorded
            kept = [max(w, 1e-6) for w in self.weights.tolist()]
            total = sum(kept)
            self._host.write("weights", self.weights, [w * len(kept) / total for w in kept])
            return
        with torch.no_grad():
            positive = self.weights.clamp_min(1e-6)
            self.weights.copy_(positive * (len(self._names) / positive.sum()))

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        """``weight/<loss>``; once measured, ``norm/<loss>`` (the loss's gradient norm on the
        layer, ``G_i / w_i``) and ``target/<loss>`` (what ``G_i`` is pulled towards)."""
        if self._names is None:
            return {}
        out: dict[str, Tensor | float] = {
            f"weight/{name}": self.weights[i] for i, name in enumerate(self._names)
        }
        for kind, values in self._measured.items():
            if isinstance(values, list):  # read at the log period only
                values = float32_tensor(values)
            out.update({f"{kind}/{name}": values[i] for i, name in enumerate(self._names)})
        return out

    def hyperparameters(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"alpha": self.alpha, "layer": self.layer}
        if self.parameter_lr is not None:
            fields["lr"] = self.parameter_lr
        return fields
