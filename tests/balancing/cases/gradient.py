"""Cases for the gradient-level balancers (balance-b).

Every method at the parameter level. The representation level runs the same ``weigh`` on a
different Gram matrix through the same engine path, so three cases cover it: MGDA (MGDA-UB of
the paper), Nash-MTL (per-loss state) and UPGrad.
"""

from __future__ import annotations

from multiloss.balancing import IMTL, MGDA, AlignedMTL, CAGrad, NashMTL, PCGrad, UPGrad
from tests.balancing.properties import BalancerCase

CASES = [
    BalancerCase("pcgrad", PCGrad),
    BalancerCase("cagrad", CAGrad),
    BalancerCase("mgda", MGDA),
    BalancerCase("mgda-loss+", MGDA, kwargs={"normalization": "loss+"}),
    BalancerCase("imtl", IMTL, nonnegative=False),  # weights sum to 1 and may be negative
    BalancerCase("nashmtl", NashMTL),
    BalancerCase("aligned-mtl", AlignedMTL, nonnegative=False),  # B 1 may have negative entries
    BalancerCase("upgrad", UPGrad),
] + [
    BalancerCase(f"{name}-rep", cls, representation=True, kwargs={"level": "representation"})
    for name, cls in (("mgda", MGDA), ("nashmtl", NashMTL), ("upgrad", UPGrad))
]
