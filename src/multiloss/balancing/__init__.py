"""Balancing several losses: weights, schedules, normalization and gradient-level methods.

Every balancer is a :class:`Balancer` (an ``nn.Module``). Use one with the trainer
(``Trainer(..., balancer=Uncertainty())``) or on its own::

    weights = balancer.backward(losses, shared=params)   # fills .grad, returns the weights

Balancers compose: ``Scheduled(Uncertainty(), warmup=1000)``, ``Normalize(PCGrad())``.

Loss weighting (cheap, one backward): :class:`Sum`, :class:`Static`, :class:`Scheduled`,
:class:`Normalize`, :class:`Uncertainty`, :class:`DWA`, :class:`GradNorm`, :class:`FAMO`,
:class:`RLW`. Gradient level (one gradient per loss, for conflicting losses):
:class:`PCGrad`, :class:`CAGrad`, :class:`MGDA`, :class:`IMTL`, :class:`NashMTL`,
:class:`AlignedMTL`, :class:`UPGrad`.
"""

from multiloss.balancing._jacobian import Jacobian, per_loss_gradients
from multiloss.balancing._plan import Level, Plan
from multiloss.balancing.aligned_mtl import AlignedMTL
from multiloss.balancing.base import Balancer
from multiloss.balancing.cagrad import CAGrad
from multiloss.balancing.context import BalanceContext, vector_on
from multiloss.balancing.diagnostics import gradient_diagnostics
from multiloss.balancing.dwa import DWA
from multiloss.balancing.famo import FAMO
from multiloss.balancing.gradient import GradientBalancer
from multiloss.balancing.gradnorm import GradNorm
from multiloss.balancing.imtl import IMTL
from multiloss.balancing.mgda import MGDA
from multiloss.balancing.nashmtl import NashMTL
from multiloss.balancing.normalize import Normalize
from multiloss.balancing.pcgrad import PCGrad
from multiloss.balancing.rlw import RLW
from multiloss.balancing.scheduled import Scheduled
from multiloss.balancing.shared import GraphInfo, discover
from multiloss.balancing.static import Static
from multiloss.balancing.sum import Sum
from multiloss.balancing.uncertainty import Uncertainty
from multiloss.balancing.upgrad import UPGrad
from multiloss.balancing.weighting import LossWeighting
from multiloss.balancing.wrapper import Wrapper

__all__ = [
    "DWA",
    "FAMO",
    "RLW",
    "BalanceContext",
    "Balancer",
    "GradNorm",
    "GradientBalancer",
    "GraphInfo",
    "Jacobian",
    "Level",
    "LossWeighting",
    "Normalize",
    "Plan",
    "Scheduled",
    "Static",
    "Sum",
    "Uncertainty",
    "Wrapper",
    "discover",
    "gradient_diagnostics",
    "per_loss_gradients",
    "vector_on",
    "AlignedMTL",
    "CAGrad",
    "IMTL",
    "MGDA",
    "NashMTL",
    "PCGrad",
    "UPGrad",
]
