"""The sink contract: where logged rows go (a progress bar, files, TensorBoard)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunInfo", "Sink", "finite_or_none"]


@dataclass(frozen=True)
class RunInfo:
    """What a sink needs to know when a run (or a resumed run) starts.

    Attributes:
        run_dir: The run directory, or None when the run writes no files.
        start_step: The step training starts from (non-zero after a resume).
        total_steps: Steps the run will reach, when known.
        resumed: Whether this run continues from a checkpoint (files are then appended to,
            after dropping rows logged past the checkpoint).
    """

    run_dir: Path | None
    start_step: int = 0
    total_steps: int | None = None
    resumed: bool = False

    @property
    def fresh(self) -> bool:
        """A new run from step 0: files left by an earlier run in the directory are replaced."""
        return not self.resumed and self.start_step == 0


class Sink:
    """Receives every logged row. Rows are flat dicts (docs/contracts.md section 4).

    Subclasses override what they need; the trainer calls ``open`` once per ``fit``,
    ``write`` for each train, val and event row, ``advance`` after each optimizer step, and
    ``close`` at the end (also on errors).
    """

    def open(self, run: RunInfo) -> None:
        """Prepare for a run."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Receive one row."""

    def advance(self, steps: int = 1) -> None:
        """Optimizer steps were taken (progress only; rows come through ``write``)."""

    def close(self) -> None:
        """Flush and release resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def finite_or_none(value: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN); everything else is returned as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
