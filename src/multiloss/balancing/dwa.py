"""``DWA``: Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import check_finite_float, check_int
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.weighting import LossWeighting

__all__ = ["DWA"]


class DWA(LossWeighting):
    """Weigh losses by how slowly they have been falling: ``T * softmax(r / temperature)``.

    ``r_i = L_i(t-1) / L_i(t-2)``, the ratio of the mean loss over the last two periods, so a
    task whose loss stalls (ratio near 1) gets more weight than one still dropping fast. The paper
    (eq. 1, and ``model_segnet_mtan.py`` of the official MTAN code) uses epoch means, weights 1
    for the first two epochs, and temperature 2. The balancer protocol has no epochs, so a period
    here is ``window`` optimizer steps (set it to your steps per epoch to match the paper
    exactly; default 25). Nash-MTL's re-implementation differs: it compares the means of the
    two halves of a sliding window of the last 50 iterations, updated every iteration. A step
    in which this balancer was not called (inside ``Scheduled`` with a ramp at 0) does not
    count towards a window: it saw no losses.

    Weights sum to the number of losses (equal to Sum while the ratios are equal). Statistics are
    accumulated on the device and committed in ``after_optimizer_step``: nothing syncs.

    Args:
        temperature: Softmax temperature ``T`` (the paper's 2; larger: closer to uniform).
        window: Optimizer steps per period.
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> dwa = DWA(window=1)
        >>> for a, b in [(4.0, 4.0), (2.0, 4.0), (1.0, 4.0)]:  # 'a' halves each step, 'b' stalls
        ...     weights = dwa.backward({"a": a * w, "b": b * w})
        >>> {k: round(v, 4) for k, v in weights.items()}
        {'a': 0.8756, 'b': 1.1244}
    """

    per_loss_state = True
    requires_positive_losses = True

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        window: int = 25,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(balance=balance)
        self.temperature = check_finite_float(
            temperature, "`temperature` of DWA", min_value=0.0, strict_min=True
        )
        self.window = check_int(window, "`window` of DWA", min_value=1)
        self._steps_in_window = 0
        self._periods = 0
        self._called = False  # called since the last optimizer step
        # Per-loss buffers, created by setup_state at the first call (or now, see below).
        self.weights: Tensor
        self.previous: Tensor
        self.before: Tensor
        self.total: Tensor
        self.calls: Tensor
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        count = len(names)
        self.register_buffer("weights", torch.ones(count, device=device))
        self.register_buffer("previous", torch.ones(count, device=device))
        self.register_buffer("before", torch.ones(count, device=device))
        self.register_buffer("total", torch.zeros(count, device=device))
        self.register_buffer("calls", torch.zeros((), device=device))

    def factors(self, ctx: BalanceContext) -> Tensor:
        self.require_at_least(ctx, 0.0, "the ratio of successive losses needs L >= 0")
        with torch.no_grad():
            self.total.add_(ctx.values)
            self.calls.add_(1.0)
        self._called = True
        return self.weights.clone()

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        if self._names is None or not self._called:
            return  # no losses seen this step: a window of none would read as a mean of 0
        self._called = False
        self._steps_in_window += 1
        if self._steps_in_window < self.window:
            return
        self._steps_in_window = 0
        self._periods += 1
        self.before.copy_(self.previous)
        self.previous.copy_(self.total / self.calls.clamp_min(1.0))
        self.total.zero_()
        self.calls.zero_()
        if self._periods >= 2:  # two full periods of history: L(t-1) and L(t-2)
            ratios = self.previous / self.before.clamp_min(1e-12)
            count = len(self._names)
            self.weights.copy_(count * torch.softmax(ratios / self.temperature, dim=0))

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(
            steps_in_window=self._steps_in_window, periods=self._periods, called=self._called
        )
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._steps_in_window = int(state.get("steps_in_window", 0))
        self._periods = int(state.get("periods", 0))
        self._called = bool(state.get("called", False))

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        if self._names is None:
            return {}
        return {f"weight/{name}": self.weights[i] for i, name in enumerate(self._names)}

    def hyperparameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "window": self.window}
