"""``metrics.csv``: the train rows as one wide table, for spreadsheets and pandas."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multiloss._validation import check_int, check_path
from multiloss.sinks.base import RunInfo, Sink, finite_or_none

__all__ = ["CSVSink"]


class CSVSink(Sink):
    """Write train (and val) rows to ``<run_dir>/metrics.csv`` with one column per key.

    Losses can appear mid-run, so the header is the union of all keys: the file is rewritten
    (atomically) every ``rewrite_every`` rows and at the end, not appended to.

    Example:
        >>> import tempfile, pathlib
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> sink = CSVSink()
        >>> sink.open(RunInfo(run_dir))
        >>> sink.write({"kind": "train", "step": 1, "loss/a": 0.5})
        >>> sink.write({"kind": "train", "step": 2, "loss/a": 0.4, "loss/b": 2.0})
        >>> sink.close()
        >>> print((run_dir / "metrics.csv").read_text().strip())
        kind,step,loss/a,loss/b
        train,1,0.5,
        train,2,0.4,2.0
    """

    def __init__(self, path: str | Path | None = None, *, rewrite_every: int = 100) -> None:
        self.path = check_path(path, "`path` of CSVSink") if path is not None else None
        self.rewrite_every = check_int(rewrite_every, "`rewrite_every` of CSVSink", min_value=1)
        self._rows: list[dict[str, Any]] = []
        self._columns: dict[str, None] = {}

    def open(self, run: RunInfo) -> None:
        if self.path is None:
            if run.run_dir is None:
                raise ValueError("CSVSink needs `path` or a trainer with a `run_dir`")
            self.path = run.run_dir / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not run.fresh:
            self._rows.clear()
            self._columns.clear()
        if run.resumed and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if int(row.get("step") or 0) <= run.start_step:
                        self._add({key: value for key, value in row.items() if value != ""})

    def _add(self, row: Mapping[str, Any]) -> None:
        self._rows.append(dict(row))
        for key in row:
            self._columns.setdefault(key, None)

    def write(self, record: Mapping[str, Any]) -> None:
        if record.get("kind") not in ("train", "val"):
            return
        self._add({key: finite_or_none(value) for key, value in record.items()})
        if len(self._rows) % self.rewrite_every == 0:
            self._flush()

    def _flush(self) -> None:
        if self.path is None or not self._rows:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self._columns))
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        self._flush()

    def __repr__(self) -> str:
        return f"CSVSink(path={str(self.path) if self.path else None!r})"
