"""Scheduled: per-loss schedules, and the warm-up blend from Sum to the inner balancer."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from multiloss.balancing import DWA, FAMO, BalanceContext, Balancer, Plan, Scheduled, Static, Sum
from multiloss.schedules import Constant, Cosine, Lambda, LinearWarmup, StepDecay
from tests.balancing.properties import Toy, run
from tests.balancing.test_gradient import COEFFICIENTS, Fixed


def test_schedules_multiply_the_fixed_weights() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Scheduled(
        {"kl": LinearWarmup(10), "aux/*": StepDecay(every=5, factor=0.5), "aux/edge": 2.0}
    )
    losses = {"kl": w, "aux/depth": w, "aux/edge": w, "nll": w}
    assert balancer.backward(losses, weights={"kl": 0.5}, step=4) == pytest.approx(
        {"kl": 0.5 * 0.4, "aux/depth": 1.0, "aux/edge": 2.0, "nll": 1.0}
    )
    assert balancer.backward(losses, step=12)["aux/depth"] == pytest.approx(0.25)


def test_warmup_blends_sum_and_the_inner_balancer() -> None:
    model = Toy()
    balancer = Scheduled(Static({"task0": 3.0}), warmup=4)
    for step, ramp in [(0, 0.0), (1, 0.25), (4, 1.0)]:
        used, _ = run(balancer, model, step=step)
        assert used["task0"] == pytest.approx(1 - ramp + 3.0 * ramp)
        assert used["task1"] == pytest.approx(1.0)


def test_warmup_blends_a_gradient_level_update() -> None:
    model = Toy()
    _, blended = run(Scheduled(Fixed(), warmup=LinearWarmup(4, start=0.5)), model, step=0)
    _, plain = run(Sum(), model)
    _, method = run(Fixed(), model)
    torch.testing.assert_close(blended, {k: 0.5 * plain[k] + 0.5 * method[k] for k in plain})
    assert COEFFICIENTS.shape == (3,)


def test_the_inner_balancer_is_not_called_while_the_ramp_is_zero() -> None:
    class Spy(Sum):
        calls = 0

        def plan(self, ctx: BalanceContext) -> Plan:
            Spy.calls += 1
            return super().plan(ctx)

    model = Toy()
    balancer = Scheduled(Spy(), warmup=LinearWarmup(10, delay=5))
    for step in range(7):
        run(balancer, model, step=step)
    assert Spy.calls == 1  # steps 0..5 have ramp 0; step 6 has 0.1


def test_bad_arguments() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"`weights` of Scheduled names \['kll'\] but no bal"):
        Scheduled({"kll": 1.0}).backward({"kl": w})
    with pytest.raises(ValueError, match=r"`warmup` schedule of Scheduled must stay in \[0, 1\]"):
        Scheduled(Sum(), warmup=Constant(2.0)).backward({"kl": w})
    with pytest.raises(TypeError, match="got weight schedules twice"):
        Scheduled({"a": 1.0}, {"b": 2.0})
    with pytest.raises(ValueError, match="`warmup` of Scheduled must be >= 1"):
        Scheduled(Sum(), warmup=0)
    with pytest.raises(TypeError, match=r"`weights\['a'\]` of Scheduled must be a float"):
        Scheduled({"a": "x"})  # type: ignore[dict-item]


def test_repr() -> None:
    text = repr(Scheduled({"kl": Cosine(100)}))
    assert text.startswith("Scheduled(\n  weights={'kl': Cosine(steps=100")


@pytest.mark.parametrize("make", [FAMO, lambda: DWA(window=1)], ids=["famo", "dwa"])
def test_a_step_the_inner_balancer_skips_leaves_its_state_as_if_it_never_happened(
    make: Callable[[], Balancer],
) -> None:
    # With the ramp at 0 the inner balancer is not called, but its after_optimizer_step is:
    # it committed a mean of no losses (0), and FAMO then took log 0 (a crash), DWA a ratio
    # over 0 (a weight of 0).
    w = torch.nn.Parameter(torch.tensor(1.0))

    def losses(t: int) -> dict[str, torch.Tensor]:
        return {"a": (5.0 - 0.3 * t) * w, "b": (2.0 - 0.01 * t) * w}

    inner = make()
    scheduled = Scheduled(inner, warmup=Lambda(lambda step: 0.0 if step == 2 else 1.0))
    alone = make()
    for t in range(6):
        used = scheduled.backward(losses(t))
        assert all(math.isfinite(v) and v > 0 for v in used.values())
        if t != 2:
            alone.backward(losses(t))
    scheduled.after_optimizer_step()
    alone.after_optimizer_step()
    for key, value in alone.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(inner.state_dict()[key], value, msg=key)
