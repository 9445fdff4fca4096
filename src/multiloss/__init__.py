"""multiloss: train PyTorch models with many named losses.

Losses come from anywhere (``add_loss`` inside any forward, layers with a side loss, or the
model's own return value), are combined by a balancer, and every one of them is logged.
"""

from multiloss import balancing, layers, losses, sinks, spec
from multiloss._validation import run_deferred_value_checks
from multiloss.aux import AuxiliaryLossModule
from multiloss.collect import (
    LossBook,
    add_loss,
    collect,
    current_book,
    mark_representation,
    record,
)
from multiloss.outputs import NamedLosses
from multiloss.spec import Attach, Automatic, Maximize, Port, Scaled, attach, explain
from multiloss.training import History, Hook, OptimizerGroup, Trainer

__version__ = "0.1.0"

__all__ = [
    "Attach",
    "Automatic",
    "AuxiliaryLossModule",
    "History",
    "Hook",
    "LossBook",
    "Maximize",
    "NamedLosses",
    "OptimizerGroup",
    "Port",
    "Scaled",
    "Trainer",
    "__version__",
    "add_loss",
    "attach",
    "balancing",
    "collect",
    "current_book",
    "explain",
    "layers",
    "losses",
    "mark_representation",
    "record",
    "run_deferred_value_checks",
    "sinks",
    "spec",
]
