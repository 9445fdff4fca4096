"""Rows and events: from the trainer's period metrics to the sinks, hooks and history."""

from __future__ import annotations

import json
import time
from typing import Any

import torch

import multiloss
from multiloss._validation import run_deferred_value_checks
from multiloss.sinks import JSONLSink, ProgressBar, RunInfo, Sink, TensorBoardSink
from multiloss.training._base import TrainerState

__all__ = ["ReportingMixin"]


class ReportingMixin(TrainerState):
    """How ``Trainer`` logs: rows to sinks (rank 0), to hooks and to its history."""

    def event(self, event: str, message: str, *, step: int | None = None, **fields: Any) -> None:
        """Log an event row (and print ``message`` under the progress bar); ``step``: the
        row's step (default: the steps taken so far)."""
        at = self.step if step is None else step
        self._write({"kind": "event", "step": at, "event": event, "message": message, **fields})

    def _default_sinks(self) -> list[Sink]:
        sinks: list[Sink] = [ProgressBar()]
        if self.run_dir is not None:
            sinks += [JSONLSink(), TensorBoardSink()]
        return sinks

    def _log(self, *, final: bool = False) -> None:
        """Write the period's row; ``final``: the row of a ``fit`` that ends between log
        steps, whose period goes on (the next row averages the same steps as it would have
        without the interruption)."""
        book = self.last_book
        if book is not None:
            for path, layer in book.aux_modules.items():
                diagnostics = layer.aux_loss_diagnostics()
                prefix = f"metric/{path}/" if path else "metric/"
                self._metrics.set_extra({prefix + k: v for k, v in diagnostics.items()})
        values = self._metrics.read(self._reducer, reset=not final)
        if not final:  # the last row is written in fit's cleanup, which must not raise
            # Value checks of losses and layers (targets in range...) wait on an accelerator
            # until the device is read anyway: here. On the CPU they have raised already.
            run_deferred_value_checks()
        elapsed = time.perf_counter() - self._period_start
        record: dict[str, Any] = {
            "kind": "train",
            "step": self.step,
            "epoch": self.epoch,
            "time": time.time(),
            "total": values.pop("total", float("nan")),
        }
        for index, param_group in enumerate(self.optimizer.param_groups):
            key = "lr" if index == 0 else f"lr/{index}"
            record[key] = float(param_group["lr"])
        record["time/step"] = elapsed / max(self._period_steps, 1)
        record["skipped"] = self.skipped
        record.update(values)
        if not final:
            self._period_start = time.perf_counter()
            self._period_steps = 0
        self._emit(record)

    def _emit(self, record: dict[str, Any]) -> None:
        self._write(record)
        for hook in self.hooks:
            hook.on_log(record)

    def _write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        for sink in self._sinks():
            sink.write(record)

    def _sinks(self) -> list[Sink]:
        return self.sinks if self.dist.is_main else []

    def _open(self, run: RunInfo) -> None:
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "run.json").write_text(json.dumps(self._describe(run), indent=1))
        for sink in self._sinks():
            sink.open(run)

    def _close(self) -> None:
        for sink in self._sinks():
            sink.close()

    def _describe(self, run: RunInfo) -> dict[str, Any]:
        return {
            "multiloss": multiloss.__version__,
            "torch": torch.__version__,
            "model": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "world_size": self.dist.world_size,
            "start_step": run.start_step,
            "total_steps": run.total_steps,
            "resumed": run.resumed,
            "started": time.time(),
            "trainer": repr(self),
        }
