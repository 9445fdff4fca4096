"""Modules that emit auxiliary losses: regularizers, heads, latents, and MoE routing.

Every layer here is a :class:`multiloss.AuxiliaryLossModule`: it emits raw, non-negative terms
named by its path in the model; weights and schedules are set on the layer
(``aux_loss_weight``, ``aux_loss_schedule``) or by the trainer.
"""

# -- auxiliary-loss layers beyond MoE (issue 6) ------------------------------------------------
from multiloss.layers.activation import ActivationRegularizer
from multiloss.layers.contrastive import ContrastiveHead
from multiloss.layers.entropy import EntropyRegularizer
from multiloss.layers.extract import extract
from multiloss.layers.gaussian_kl import GaussianKL, active_units
from multiloss.layers.head import AuxiliaryHead, DroppedHead

# -- Mixture of Experts (issue 3) --------------------------------------------------------------
from multiloss.layers.moe import MixtureOfExperts, set_aux_grad_scale
from multiloss.layers.orthogonality import OrthogonalityRegularizer, orthogonality_gap
from multiloss.layers.reversal import GradientReversal
from multiloss.layers.tapped import Tapped

__all__ = [
    # -- auxiliary-loss layers beyond MoE (issue 6)
    "ActivationRegularizer",
    "AuxiliaryHead",
    "ContrastiveHead",
    "DroppedHead",
    "EntropyRegularizer",
    "GradientReversal",
    "GaussianKL",
    "OrthogonalityRegularizer",
    "Tapped",
    "active_units",
    "extract",
    "orthogonality_gap",
    # -- Mixture of Experts (issue 3)
    "MixtureOfExperts",
    "set_aux_grad_scale",
]
