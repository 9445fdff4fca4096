"""TensorBoard event files, through the ``tensorboard`` package's writer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multiloss._validation import check_path
from multiloss.sinks.base import RunInfo, Sink

__all__ = ["TensorBoardSink"]

# Keys that index a row rather than measure something.
_INDEX_KEYS = frozenset({"kind", "step", "epoch", "time", "event", "message"})


class TensorBoardSink(Sink):
    """Write every numeric value of every row as a scalar (val rows under ``val/``).

    Events become text entries. A custom-scalars layout groups each family (raw losses,
    weighted losses, weights, gradient shares) into one multi-line chart. On resume the writer
    purges events logged after the checkpoint.

    Args:
        log_dir: Where to write; default ``<run_dir>/tensorboard``.
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = (
            check_path(log_dir, "`log_dir` of TensorBoardSink") if log_dir is not None else None
        )
        self._writer: Any = None

    def open(self, run: RunInfo) -> None:
        # Imported here: tensorboard is slow to import and only runs with a run directory need it.
        from torch.utils.tensorboard import SummaryWriter

        if self.log_dir is None:
            if run.run_dir is None:
                raise ValueError("TensorBoardSink needs `log_dir` or a trainer with a `run_dir`")
            self.log_dir = run.run_dir / "tensorboard"
        # Purging makes TensorBoard drop events an earlier writer logged at or after that step:
        # those of the interrupted run past its checkpoint, or all of a replaced run's.
        purge = run.start_step + 1 if run.resumed else (0 if run.fresh else None)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)
        families = {
            "raw": "loss/",
            "weighted": "weighted/",
            "weight": "weight/",
            "share of update": "grad/share/",
            "gradient norm": "grad/norm/",
        }
        layout = {
            "multiloss": {
                title: ["Multiline", [f"^{prefix}.*"]] for title, prefix in families.items()
            }
        }
        self._writer.add_custom_scalars(layout)

    def write(self, record: Mapping[str, Any]) -> None:
        if self._writer is None:
            raise RuntimeError("TensorBoardSink.write() before open()")
        step = int(record.get("step", 0))
        kind = record.get("kind")
        if kind == "event":
            self._writer.add_text(f"events/{record.get('event')}", str(record.get("message")), step)
            return
        prefix = "val/" if kind == "val" else ""
        for key, value in record.items():
            if key in _INDEX_KEYS or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                self._writer.add_scalar(prefix + key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return f"TensorBoardSink(log_dir={str(self.log_dir) if self.log_dir else None!r})"
