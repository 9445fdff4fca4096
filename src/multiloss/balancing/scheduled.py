"""``Scheduled``: weights as functions of the step; ramping a balancer in from plain summation."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import check_int, check_loss_name, describe
from multiloss.balancing._plan import Plan
from multiloss.balancing.base import Balancer, _to_device
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.wrapper import Wrapper
from multiloss.schedules import LinearWarmup, Schedule, as_schedule

__all__ = ["Scheduled"]

ScheduleLike = Schedule | float | Callable[[int], float]


class Scheduled(Wrapper):
    """Per-loss weight schedules, and an optional warm-up from Sum to the inner balancer.

    Two independent jobs, both driven by ``multiloss.schedules`` (``LinearWarmup``, ``Cosine``,
    ``StepDecay``, ``Cyclic``, ``SigmoidRamp``, ``KLAnneal``, or any callable of the step):

    * ``weights``: loss name or glob pattern -> schedule; the fixed weight of each matching
      balanced loss is multiplied by the schedule's value at the current step (an exact name wins
      over patterns; among patterns, the first listed wins; unmatched losses keep factor 1);
    * ``warmup``: the update is ``(1 - r) * Sum + r * inner`` with ``r`` ramping from 0 to 1
      (an int ``n`` means ``LinearWarmup(n)``). While ``r == 0`` the inner balancer is not called
      at all (it costs nothing, and its statistics, e.g. GradNorm's initial losses, start when it
      does). Loss-weighting inners blend their weights; gradient-level inners blend their
      shared update, both in one backward pass.

    Args:
        inner: The balancer to schedule (default ``Sum()``). A mapping here is taken as
            ``weights`` (``Scheduled({"kl": LinearWarmup(1000)})``).
        weights: Name or pattern -> schedule multiplying that loss's fixed weight.
        warmup: Steps of a linear ramp from Sum to ``inner``, or a schedule with values in [0, 1].
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> from multiloss.schedules import LinearWarmup
        >>> w = torch.nn.Parameter(torch.tensor(1.0))
        >>> kl = Scheduled({"kl": LinearWarmup(100)})
        >>> kl.backward({"nll": w, "kl": w}, step=25)
        {'kl': 0.25, 'nll': 1.0}
    """

    def __init__(
        self,
        inner: Balancer | Mapping[str, ScheduleLike] | None = None,
        weights: Mapping[str, ScheduleLike] | None = None,
        *,
        warmup: int | Schedule | None = None,
        balance: str | Iterable[str] | None = None,
    ) -> None:
        if isinstance(inner, Mapping):
            if weights is not None:
                raise TypeError(
                    "Scheduled got weight schedules twice: as its first argument and as "
                    "`weights`; pass the inner balancer first, or only the mapping"
                )
            inner, weights = None, inner
        super().__init__(inner, balance=balance)
        if weights is not None and not isinstance(weights, Mapping):
            raise TypeError(f"`weights` of Scheduled must be a mapping; got {describe(weights)}")
        self.schedules: dict[str, Schedule] = {
            check_loss_name(key, "each key of `weights` of Scheduled"): as_schedule(
                value, f"`weights[{key!r}]` of Scheduled"
            )
            for key, value in (weights or {}).items()
        }
        self.warmup: Schedule | None
        if warmup is None or isinstance(warmup, Schedule):
            self.warmup = warmup
        else:
            self.warmup = LinearWarmup(check_int(warmup, "`warmup` of Scheduled", min_value=1))
        self._keys: dict[tuple[str, ...], list[Schedule | None]] = {}

    def _per_loss(self, names: tuple[str, ...]) -> list[Schedule | None]:
        found = self._keys.get(names)
        if found is not None:
            return found
        chosen: list[Schedule | None] = []
        used: set[str] = set()
        for name in names:
            schedule = self.schedules.get(name)
            if schedule is not None:
                used.add(name)
            else:
                for key, candidate in self.schedules.items():
                    if key not in names and fnmatch.fnmatchcase(name, key):
                        schedule = candidate
                        used.add(key)
                        break
            chosen.append(schedule)
        typos = [k for k in self.schedules if k not in used and not set(k) & set("*?[")]
        if typos:
            raise ValueError(
                f"`weights` of Scheduled names {typos} but no balanced loss has that name; the "
                f"balanced losses are {list(names)}"
            )
        self._keys[names] = chosen
        return chosen

    def ramp(self, step: int) -> float:
        """How far the warm-up is, in [0, 1] (1 without a warm-up)."""
        if self.warmup is None:
            return 1.0
        value = self.warmup(step)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"the `warmup` schedule of Scheduled must stay in [0, 1]; got {value} at "
                f"step {step}"
            )
        return value

    def plan(self, ctx: BalanceContext) -> Plan:
        schedules = self._per_loss(ctx.names)
        if any(s is not None for s in schedules):
            values = [1.0 if s is None else s(ctx.step) for s in schedules]
            ctx = ctx.derive(weights=ctx.weights * _to_device(values, ctx.device))
        ramp = self.ramp(ctx.step)
        if ramp == 0.0:
            return ctx.sum_plan()
        plan = self.inner.plan_for(ctx)
        if ramp == 1.0:
            return plan
        return _blend(ctx, plan, ramp)

    def hyperparameters(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.schedules:
            fields["weights"] = self.schedules
        if self.warmup is not None:
            fields["warmup"] = self.warmup
        return fields


def _blend(ctx: BalanceContext, plan: Plan, ramp: float) -> Plan:
    """``(1 - ramp) * Sum + ramp * plan``, for any kind of plan."""
    keep = 1.0 - ramp
    update = plan.shared_update
    blended: Tensor | list[Tensor] | None
    if update is None:
        blended = None
    elif isinstance(update, Tensor):
        blended = keep * ctx.weights + ramp * update
    else:
        plain = ctx.jacobian(plan.level).combine(torch.ones_like(ctx.weights))
        blended = [keep * p + ramp * u for p, u in zip(plain, update, strict=True)]
    reported = None
    if plan.reported is not None:
        reported = keep * ctx.weights + ramp * plan.reported
    return Plan(
        loss_weights=keep * ctx.weights + ramp * plan.loss_weights,
        shared_update=blended,
        level=plan.level,
        extra=plan.extra,
        reported=reported,
    )
