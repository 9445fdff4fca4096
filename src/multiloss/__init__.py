"""multiloss: train PyTorch models with many named losses.

Losses come from anywhere (``add_loss`` inside any forward, layers with a side loss, or the
model's own return value), are combined by a balancer, and every one of them is logged.
"""

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

__version__ = "0.1.0"

__all__ = [
    "AuxiliaryLossModule",
    "LossBook",
    "NamedLosses",
    "__version__",
    "add_loss",
    "collect",
    "current_book",
    "mark_representation",
    "record",
]
