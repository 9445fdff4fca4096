"""Mixture-of-Experts with complete, correct load balancing.

The layer (:class:`MixtureOfExperts`) is assembled from small parts, each usable and tested
on its own: routing (:mod:`.routing`), balancing losses (:mod:`.losses`), the bias update and
count reductions (:mod:`.balancing`), dispatch plans (:mod:`.dispatch`), grouped and batched
expert products (:mod:`.grouped`, :mod:`.experts`), diagnostics (:mod:`.diagnostics`) and the
gradient carrier (:mod:`.carrier`).
"""

from multiloss.layers.moe.balancing import BALANCE_TYPES, LOSS_TYPES
from multiloss.layers.moe.carrier import carry_aux_grad, set_aux_grad_scale
from multiloss.layers.moe.layer import DEFAULT_BALANCE, MixtureOfExperts

__all__ = [
    "BALANCE_TYPES",
    "DEFAULT_BALANCE",
    "LOSS_TYPES",
    "MixtureOfExperts",
    "carry_aux_grad",
    "set_aux_grad_scale",
]
