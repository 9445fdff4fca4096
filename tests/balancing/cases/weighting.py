"""Cases for the loss-weighting balancers and wrappers (balance-a)."""

from __future__ import annotations

from multiloss.balancing import (
    DWA,
    FAMO,
    RLW,
    GradNorm,
    Normalize,
    Scheduled,
    Static,
    Sum,
    Uncertainty,
)
from multiloss.schedules import Cosine, LinearWarmup
from tests.balancing.cases.engine import Mean
from tests.balancing.properties import BalancerCase

CASES = [
    BalancerCase("sum", Sum),
    BalancerCase(
        "static", lambda **kw: Static({"task[12]": 0.5}, default=2.0, **kw), reduces_to_sum=False
    ),
    BalancerCase(
        "scheduled-weights",
        lambda **kw: Scheduled({"task[12]": Cosine(10, start=1.0, end=0.1)}, **kw),
    ),
    # Mid-ramp (steps 0..4 of a 10-step warm-up) blends Sum with the inner balancer.
    BalancerCase(
        "scheduled-warmup-uncertainty",
        lambda **kw: Scheduled(Uncertainty(), warmup=LinearWarmup(10, start=0.5), **kw),
        reduces_to_sum=False,
        learnable=True,
    ),
    BalancerCase(
        "scheduled-warmup-gradient",
        lambda **kw: Scheduled(Mean(), warmup=LinearWarmup(10, start=0.5), **kw),
    ),
    BalancerCase("normalize-running", Normalize, reduces_to_sum=False),
    BalancerCase(
        "normalize-initial", lambda **kw: Normalize(mode="initial", **kw), reduces_to_sum=False
    ),
    BalancerCase("normalize-gradient", lambda **kw: Normalize(Mean(), **kw), reduces_to_sum=False),
    BalancerCase("uncertainty", Uncertainty, reduces_to_sum=False, learnable=True),
    BalancerCase("dwa", lambda **kw: DWA(window=1, **kw)),
    BalancerCase("gradnorm", GradNorm, learnable=True),
    BalancerCase(
        "gradnorm-representation",
        lambda **kw: GradNorm(layer="representation", **kw),
        learnable=True,
    ),
    BalancerCase("famo", FAMO),
    BalancerCase("rlw", RLW),
    BalancerCase("rlw-dirichlet", lambda **kw: RLW(distribution="dirichlet", **kw)),
]
