"""Modules that emit auxiliary losses: regularizers, heads, latents, and MoE routing.

Every layer here is a :class:`multiloss.AuxiliaryLossModule`: it emits raw, non-negative terms
named by its path in the model; weights and schedules are set on the layer
(``aux_loss_weight``, ``aux_loss_schedule``) or by the trainer.
"""

# -- Mixture of Experts (issue 3) --------------------------------------------------------------
from multiloss.layers.moe import MixtureOfExperts, set_aux_grad_scale

__all__ = [
    # -- Mixture of Experts (issue 3)
    "MixtureOfExperts",
    "set_aux_grad_scale",
]
