"""Cases for the loss-weighting balancers and wrappers (balance-a)."""

from __future__ import annotations

from multiloss.balancing import Static, Sum
from tests.balancing.properties import BalancerCase

CASES = [
    BalancerCase("sum", Sum),
    BalancerCase(
        "static", lambda **kw: Static({"task[12]": 0.5}, default=2.0, **kw), reduces_to_sum=False
    ),
]
