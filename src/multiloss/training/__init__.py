"""Training: the ``Trainer`` loop, its hooks, optimizer groups, checkpoints and history."""

from multiloss.training.groups import OptimizerGroup
from multiloss.training.history import History
from multiloss.training.hooks import CheckpointHook, EvalHook, Hook
from multiloss.training.trainer import Trainer

__all__ = ["CheckpointHook", "EvalHook", "History", "Hook", "OptimizerGroup", "Trainer"]
