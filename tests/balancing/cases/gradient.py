"""Cases for the gradient-level balancers (balance-b): every method, at both levels."""

from __future__ import annotations

from multiloss.balancing import IMTL, MGDA, AlignedMTL, CAGrad, NashMTL, PCGrad, UPGrad
from tests.balancing.properties import BalancerCase

# (id, class, promises non-negative multipliers)
_METHODS = [
    ("pcgrad", PCGrad, True),
    ("cagrad", CAGrad, True),
    ("mgda", MGDA, True),
    ("imtl", IMTL, False),
    ("nashmtl", NashMTL, True),
    ("aligned-mtl", AlignedMTL, False),
    ("upgrad", UPGrad, True),
]

CASES = (
    [BalancerCase(name, cls, nonnegative=nonnegative) for name, cls, nonnegative in _METHODS]
    + [
        BalancerCase(
            f"{name}-rep",
            cls,
            nonnegative=nonnegative,
            representation=True,
            kwargs={"level": "representation"},
        )
        for name, cls, nonnegative in _METHODS
    ]
    + [
        BalancerCase("mgda-loss+", MGDA, kwargs={"normalization": "loss+"}),
        BalancerCase("mgda-l2", MGDA, kwargs={"normalization": "l2"}),
    ]
)
