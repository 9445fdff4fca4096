"""The trainer's shared state, declared once for the mixins that split ``Trainer`` by concern.

``Trainer`` is assembled from ``StepMixin`` (one optimizer step), ``CheckpointMixin``
(saving and resuming) and ``ReportingMixin`` (rows to sinks, events). Each works on the
attributes declared here, which ``Trainer.__init__`` sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from multiloss.aux import AuxiliaryLossModule
from multiloss.collect import LossBook
from multiloss.schedules import Schedule
from multiloss.sinks import Sink
from multiloss.training.amp import AmpSettings
from multiloss.training.data import DataStream
from multiloss.training.distributed import DistContext
from multiloss.training.groups import OptimizerGroup
from multiloss.training.history import History
from multiloss.training.hooks import Hook
from multiloss.training.metrics import PeriodMetrics
from multiloss.training.model_io import ForwardFn

__all__ = ["TrainerState"]


class TrainerState:
    """Attributes shared by the trainer's parts (set in ``Trainer.__init__``)."""

    dist: DistContext
    model: nn.Module
    net: nn.Module
    groups: list[OptimizerGroup]
    balancer: Any
    run_dir: Path | None
    weights: dict[str, Schedule]
    log_every: int
    keep_checkpoints: int
    nonfinite: str
    grad_clip: float | None
    accumulate: int
    device: Any
    amp: AmpSettings
    forward: ForwardFn | None
    grad_diagnostics: bool
    shared: list[Tensor] | None
    sinks: list[Sink]
    hooks: list[Hook]
    step: int
    skipped: int
    epoch_ended: bool
    last_book: LossBook | None
    # The step's micro-batches: loss names, detached values, and what the guard reads of
    # their books (the auxiliary losses that must stay >= 0, where each loss came from); not
    # the books themselves, which hold the graph.
    _step_values: list[tuple[tuple[str, ...], Tensor, frozenset[str], Mapping[str, str]]]
    _balancer_parameters: int  # how many the balancer had when last added to the optimizer
    history: History
    _stream: DataStream | None
    _metrics: PeriodMetrics
    _aux_layers: list[AuxiliaryLossModule]
    _checked_weight_keys: bool
    _masks: dict[tuple[tuple[str, ...], frozenset[str]], Tensor]
    _active: dict[tuple[int, tuple[str, ...]], tuple[int, ...]]
    _period_start: float
    _period_steps: int
    _whole_batch: bool
    _ddp: bool

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self._stream.epoch if self._stream is not None else 0

    @property
    def _data(self) -> DataStream:
        if self._stream is None:
            raise RuntimeError("the trainer has no data stream: call fit() first")
        return self._stream

    @property
    def _reducer(self) -> Any:
        return self.dist.mean_with_keys if self.dist.active else None

    # Provided by the other parts (stubs here so each part type-checks on its own).
    def event(self, event: str, message: str, **fields: Any) -> None:
        raise NotImplementedError

    def _log(self) -> None:
        raise NotImplementedError

    def _sinks(self) -> list[Sink]:
        raise NotImplementedError

    @property
    def optimizer(self) -> Any:
        """The (first) optimizer."""
        return self.groups[0].optimizer
