"""Loss modules a spec can attach: thin, typed, shape-checked wrappers of ``torch.nn.functional``.

Each takes ``(input, target)`` and checks that the target fits before computing anything, so a
wrong shape or dtype is an error that names the loss and both shapes instead of a silent
broadcast. ``multiloss.Automatic`` picks among them; ``multiloss.Attach`` attaches any of them
(or any callable) to an output.
"""

from multiloss.losses.base import Loss, TargetMismatchError
from multiloss.losses.binary_cross_entropy import BinaryCrossEntropy
from multiloss.losses.contrastive import Contrastive
from multiloss.losses.cross_entropy import CrossEntropy
from multiloss.losses.mean_absolute import MeanAbsolute
from multiloss.losses.mean_squared import MeanSquared
from multiloss.losses.nll import NLL

__all__ = [
    "NLL",
    "BinaryCrossEntropy",
    "Contrastive",
    "CrossEntropy",
    "Loss",
    "MeanAbsolute",
    "MeanSquared",
    "TargetMismatchError",
]
