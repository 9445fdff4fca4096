"""``FAMO``: Fast Adaptive Multitask Optimization (Liu, Feng, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import check_finite_float, check_loss_tensor
from multiloss.balancing._arrays import float32_list, float32_tensor, floats_on_host
from multiloss.balancing._checks import bounds_per_loss
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["FAMO"]

_EPS = 1e-8  # the official code's offset inside the logarithm


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


class FAMO(LossWeighting):
    """Decrease every loss at the same rate, in O(1) time and memory per step.

    With task logits ``xi`` (``z = softmax(xi)``) and ``D_i = L_i - lower_bound_i + 1e-8``, the
    model descends ``sum_i z_i log D_i / c`` with ``c = sum_i z_i / D_i`` (constant): the
    weights are ``z_i / (c D_i)``. After the step, the logits follow the observed decrease
    ``delta_i = log D_i(before) - log D_i(after)``: ``xi`` takes an Adam step (``lr``, L2 decay
    ``gamma``) along ``J_softmax(xi)^T delta``, so tasks that improved less get more weight.
    Paper's Algorithm 1; defaults of the official ``famo.py`` (``gamma=0.01``, ``w_lr=0.025``,
    logits start at 0). One loss: weight 1 (Sum).

    **Which "after" loss.** The official code re-evaluates the losses on the same batch after
    the optimizer step (an extra forward pass). Inside the trainer there is none, so by default
    ``delta`` compares the previous step's loss with this step's loss on the new batch
    (noisier, no extra cost); the logits are updated at the start of each step. With gradient
    accumulation "before" is the mean over the previous step's micro-batches and "after" this
    step's first micro-batch (the weights of the step are needed before its other
    micro-batches are seen): both estimate the loss at those parameters, the second with more
    noise. For the exact variant, compute the losses again after the step and call
    :meth:`update` yourself.

    Not done here: the official code also clips the shared gradient norm to 1 (``max_norm``);
    use the trainer's gradient clipping for that.

    Args:
        gamma: L2 decay of the logits (the official default; the paper's runs use 1e-3 to 1e-2).
        lr: Adam learning rate of the logits.
        lower_bound: The smallest value each loss can take (a float, or loss name -> float;
            default 0). A loss below it stops training with an error.
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> famo = FAMO()
        >>> weights = famo.backward({"a": 4 * w, "b": 1 * w})  # equal logits: ~ 1 / D_i
        >>> {name: round(value, 4) for name, value in weights.items()}
        {'a': 0.2, 'b': 0.8}
    """

    per_loss_state = True
    requires_positive_losses = True

    def __init__(
        self,
        *,
        gamma: float = 0.01,
        lr: float = 0.025,
        lower_bound: float | Mapping[str, float] = 0.0,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(balance=balance)
        self.gamma = check_finite_float(gamma, "`gamma` of FAMO", min_value=0.0)
        self.lr = check_finite_float(lr, "`lr` of FAMO", min_value=0.0, strict_min=True)
        if isinstance(lower_bound, Mapping):
            self.lower_bound: float | dict[str, float] = {
                k: check_finite_float(v, f"`lower_bound[{k!r}]` of FAMO")
                for k, v in lower_bound.items()
            }
        else:
            self.lower_bound = check_finite_float(lower_bound, "`lower_bound` of FAMO")
        self._adam_steps = 0
        self._have_previous = False  # a finished step whose loss the next one compares with
        self._stepped = False  # an optimizer step happened since the last call
        self._called = False  # called since the last optimizer step
        # Per-loss buffers, created by setup_state at the first call (or now, see below).
        self.logits: Tensor
        self.exp_avg: Tensor
        self.exp_avg_sq: Tensor
        self.previous: Tensor
        self.total: Tensor
        self.calls: Tensor
        self.bounds: Tensor
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        count = len(names)
        bounds = bounds_per_loss(self.lower_bound, names, "FAMO")
        self.register_buffer("logits", torch.zeros(count, device=device))
        self.register_buffer("exp_avg", torch.zeros(count, device=device))
        self.register_buffer("exp_avg_sq", torch.zeros(count, device=device))
        self.register_buffer("previous", torch.ones(count, device=device))  # mean D of last step
        self.register_buffer("total", torch.zeros(count, device=device))  # this step's sum of D
        self.register_buffer("calls", torch.zeros((), device=device))
        self.register_buffer("bounds", torch.tensor(bounds, device=device), persistent=False)

    # -- the logits' update ----------------------------------------------------------------------
    def _on_host(self) -> bool:
        """Whether the state lives on the CPU: then the per-step arithmetic (a few dozen
        operations on ``T`` numbers) runs on Python floats, written into the buffers through
        kept memoryviews (``HostWriter``). As tensor operations it took 0.45 ms of a 9 ms step
        (T = 2, 2 cores), several times its cost measured alone, and kept FAMO above 1.05x of
        Sum."""
        return floats_on_host(self.logits)

    @torch.no_grad()
    def _update_logits(self, after: Tensor) -> None:
        """One Adam step of the logits from the decrease ``log previous - log after``."""
        if self._on_host():
            self._update_logits_host(after.tolist())
            return
        delta = torch.log(self.previous) - torch.log(after)
        z = torch.softmax(self.logits, dim=0)
        grad = z * delta - z * (z @ delta)  # J_softmax^T delta (J is symmetric)
        grad = grad + self.gamma * self.logits  # Adam's L2 weight decay, as torch.optim.Adam
        self._adam_steps += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        correction1 = 1.0 - beta1**self._adam_steps
        correction2 = 1.0 - beta2**self._adam_steps
        denom = self.exp_avg_sq.sqrt() / math.sqrt(correction2) + eps
        self.logits.addcdiv_(self.exp_avg, denom, value=-self.lr / correction1)

    def _update_logits_host(self, after: list[float]) -> None:
        """:meth:`_update_logits` on Python floats (the same steps, in float64, stored in the
        float32 buffers)."""
        xi = self.logits.tolist()
        previous = self.previous.tolist()
        delta = [math.log(p) - math.log(a) for p, a in zip(previous, after, strict=True)]
        z = _softmax(xi)
        mean = sum(zi * di for zi, di in zip(z, delta, strict=True))
        grad = [zi * (di - mean) + self.gamma * x for zi, di, x in zip(z, delta, xi, strict=True)]
        self._adam_steps += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        first = [
            beta1 * m + (1.0 - beta1) * g for m, g in zip(self.exp_avg.tolist(), grad, strict=True)
        ]
        second = [
            beta2 * v + (1.0 - beta2) * g * g
            for v, g in zip(self.exp_avg_sq.tolist(), grad, strict=True)
        ]
        correction1 = 1.0 - beta1**self._adam_steps
        root2 = math.sqrt(1.0 - beta2**self._adam_steps)
        step = self.lr / correction1
        self._host.write(
            "logits",
            self.logits,
            [
                x - step * m / (math.sqrt(v) / root2 + eps)
                for x, m, v in zip(xi, first, second, strict=True)
            ],
        )
        self._host.write("exp_avg", self.exp_avg, first)
        self._host.write("exp_avg_sq", self.exp_avg_sq, second)

    def _distances(self, values: Tensor) -> Tensor:
        return values - self.bounds + _EPS

    def factors(self, ctx: BalanceContext) -> Tensor:
        self.require_at_least(ctx, self.bounds, "FAMO takes the logarithm of L - lower_bound")
        floats = ctx.value_floats()
        if self._on_host() and floats is not None:
            return self._factors_host(floats)
        if self._on_host() and ctx.values.device.type == "cpu":
            return self._factors_host(ctx.values.tolist())
        self._called = True
        distances = self._distances(ctx.values).clamp_min(_EPS)
        if self._stepped and self._have_previous:
            self._update_logits(distances)
        self._stepped = False
        with torch.no_grad():
            self.total.add_(distances)
            self.calls.add_(1.0)
        z = torch.softmax(self.logits, dim=0)
        scaled = z / distances
        return scaled / scaled.sum()

    def _factors_host(self, values: list[float]) -> Tensor:
        """:meth:`factors` on Python floats (see :meth:`_on_host`)."""
        # In float32, as the tensor code: a loss that did not change must give a decrease of
        # exactly 0 (Adam would turn a rounding difference of 1e-9 into a full step).
        bounds = self.bounds.tolist()
        eps = float32_list([_EPS])[0]
        gaps = float32_list([v - b for v, b in zip(values, bounds, strict=True)])
        distances = [max(gap, eps) for gap in float32_list([gap + eps for gap in gaps])]
        if self._stepped and self._have_previous:
            self._update_logits_host(distances)
        self._stepped = False
        self._called = True
        total = [t + d for t, d in zip(self.total.tolist(), distances, strict=True)]
        self._host.write("total", self.total, total)
        self._host.write("calls", self.calls, [self.calls.item() + 1.0])
        scaled = [zi / d for zi, d in zip(_softmax(self.logits.tolist()), distances, strict=True)]
        norm = sum(scaled)
        return float32_tensor([value / norm for value in scaled])

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        if self._names is None or not self._called:
            # No losses seen this step (inside Scheduled with a ramp at 0): the last step
            # that saw some stays "before", instead of a mean of none (0, and log 0 next).
            return
        self._called = False
        if self._on_host():
            total = self.total.tolist()
            count = max(self.calls.item(), 1.0)
            self._host.write("previous", self.previous, [value / count for value in total])
            self._host.write("total", self.total, [0.0] * len(total))
            self._host.write("calls", self.calls, [0.0])
        else:
            self.previous.copy_(self.total / self.calls.clamp_min(1.0))
            self.total.zero_()
            self.calls.zero_()
        self._have_previous = True
        self._stepped = True

    def update(self, losses: Mapping[str, Tensor]) -> None:
        """The official variant: update the logits from the losses re-evaluated after the step.

        Call it after ``optimizer.step()`` (and ``after_optimizer_step()``, which is called for
        you if it was not) with the same batch's losses; the automatic update of the next call
        is then skipped.
        """
        if self._pending_step:
            self.after_optimizer_step()
        if self._names is None or not self._have_previous:
            raise RuntimeError("FAMO.update() needs a finished step first: call backward/apply")
        missing = sorted(set(self._names) - set(losses))
        if missing:
            raise ValueError(f"FAMO.update() is missing the losses {missing}")
        values = torch.stack(
            [check_loss_tensor(losses[n], n).detach().float() for n in self._names]
        )
        self._update_logits(self._distances(values).clamp_min(_EPS))
        self._stepped = False

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(
            adam_steps=self._adam_steps,
            have_previous=self._have_previous,
            stepped=self._stepped,
            called=self._called,
        )
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._adam_steps = int(state.get("adam_steps", 0))
        self._have_previous = bool(state.get("have_previous", False))
        self._stepped = bool(state.get("stepped", False))
        self._called = bool(state.get("called", False))

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        if self._names is None:
            return {}
        z = torch.softmax(self.logits, dim=0)
        return {f"z/{name}": z[i] for i, name in enumerate(self._names)}

    def hyperparameters(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"gamma": self.gamma, "lr": self.lr}
        if self.lower_bound != 0.0:
            fields["lower_bound"] = self.lower_bound
        return fields
