"""The advisor live during training: a hook that checks the logged rows as they come."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from multiloss._validation import check_int
from multiloss.report.advisor.advise import advise_table
from multiloss.report.advisor.config import AdvisorConfig, check_config
from multiloss.report.advisor.finding import Finding
from multiloss.report.reader import METRICS_FILE, read_run
from multiloss.report.table import Table
from multiloss.training.hooks import Hook

__all__ = ["AdvisorHook"]


class AdvisorHook(Hook):
    """Check loss health every ``every`` logged training rows and report new findings.

    Each finding that appears is reported once, through ``trainer.event("advice", message,
    finding=code, loss=loss, suggestion=...)``: a line under the progress bar and an event row
    in ``metrics.jsonl``. It is reported again only after it has cleared and come back.

    Memory stays bounded on long runs: past ``max_rows`` rows, every other row of the older
    half is dropped, so the whole run stays covered at a coarser grain (the whole-run rules
    need the start; the window rules need the recent rows at full grain).

    Args:
        every: Check after this many training rows.
        start: Rows to wait before the first check (default: the advisor's ``window``), so
            the first, fast-moving steps of training are not judged on their own.
        max_rows: Most rows kept in memory.
        config: Thresholds (``AdvisorConfig``); ``**thresholds`` override single fields.

    Example:
        >>> class FakeTrainer:
        ...     run_dir = None
        ...     def event(self, event, message, **fields):
        ...         print(event, fields["finding"], fields["loss"])
        >>> hook = AdvisorHook(every=50)
        >>> hook.trainer = FakeTrainer()
        >>> for step in range(1, 101):
        ...     aux = 1.0 + 0.1 * (step % 3)
        ...     hook.on_log({"kind": "train", "step": step, "loss/task": 2.0 / step,
        ...                  "weighted/task": 2.0 / step, "loss/aux": aux,
        ...                  "weighted/aux": 1e-6 * aux, "weight/aux": 1e-6})
        advice ignored aux
        >>> hook
        AdvisorHook(every=50, start=50, max_rows=4000, rows=100, active=1)
    """

    def __init__(
        self,
        every: int = 10,
        *,
        start: int | None = None,
        max_rows: int = 4000,
        config: AdvisorConfig | None = None,
        **thresholds: Any,
    ) -> None:
        self.every = check_int(every, "`every` of AdvisorHook", min_value=1)
        self.max_rows = check_int(max_rows, "`max_rows` of AdvisorHook", min_value=100)
        check_config(config, "`config` of AdvisorHook")
        self.config = AdvisorConfig.from_options(config, **thresholds)
        self.start = (
            self.config.window
            if start is None
            else check_int(start, "`start` of AdvisorHook", min_value=0)
        )
        self.findings: list[Finding] = []
        self._rows: list[dict[str, float]] = []
        self._since = 0
        self._seen = 0
        self._active: set[tuple[str, str]] = set()

    def before_train(self) -> None:
        """On a resumed run, start from the rows the run directory holds up to the resume step."""
        trainer = getattr(self, "trainer", None)
        run_dir = getattr(trainer, "run_dir", None)
        step = int(getattr(trainer, "step", 0) or 0)
        # A fresh run (step 0) starts empty, whatever an old metrics.jsonl may still hold.
        if self._rows or run_dir is None or step <= 0:
            return
        if not (Path(run_dir) / METRICS_FILE).is_file():
            return
        table = read_run(run_dir).train
        columns = {key: table.column(key) for key in table}
        for index in np.flatnonzero(table.steps <= step):
            row: dict[str, float] = {"step": int(table.steps[index])}
            for key, values in columns.items():
                value = float(values[index])
                if value == value:  # not NaN: the row had this key
                    row[key] = value
            self._rows.append(row)
        self._seen = len(self._rows)
        self._thin()

    def on_log(self, record: dict[str, Any]) -> None:
        """Buffer a training row; every ``every`` rows, check and report new findings."""
        if not _is_train(record):
            return
        self._rows.append(dict(record))
        self._thin()
        self._since += 1
        self._seen += 1
        if self._since >= self.every and self._seen >= self.start:
            self._since = 0
            self.check()

    def check(self) -> list[Finding]:
        """Evaluate the rules now; report findings that were not active; return all of them."""
        self.findings = advise_table(Table.from_rows(self._rows), self.config)
        current = {finding.key for finding in self.findings}
        for finding in self.findings:
            if finding.key not in self._active:
                self._report(finding)
        self._active = current
        return self.findings

    def _report(self, finding: Finding) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        trainer.event(
            "advice",
            finding.message,
            finding=finding.code,
            loss=finding.loss,
            suggestion=finding.suggestion,
        )

    def _thin(self) -> None:
        if len(self._rows) <= self.max_rows:
            return
        half = len(self._rows) // 2
        self._rows = self._rows[:half:2] + self._rows[half:]

    def state_dict(self) -> dict[str, Any]:
        """The findings already reported (the rows are re-read from the run directory)."""
        return {"active": sorted(self._active), "since": self._since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore which findings were already reported, so a resume does not repeat them."""
        self._active = {(str(code), str(loss)) for code, loss in state.get("active", [])}
        self._since = int(state.get("since", 0))

    def __repr__(self) -> str:
        return (
            f"AdvisorHook(every={self.every}, start={self.start}, max_rows={self.max_rows}, "
            f"rows={len(self._rows)}, active={len(self._active)})"
        )


def _is_train(record: dict[str, Any]) -> bool:
    kind = record.get("kind")
    if kind is not None:
        return bool(kind == "train")
    # Without a kind, a training row is the one with weights or a learning rate.
    return "lr" in record or any(key.startswith("weight/") for key in record)
