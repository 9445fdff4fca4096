"""``metrics.jsonl``: one JSON object per logged row, flushed per line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from multiloss._validation import check_path
from multiloss.sinks.base import RunInfo, Sink, finite_or_none

__all__ = ["JSONLSink"]


class JSONLSink(Sink):
    """Append rows to ``<run_dir>/metrics.jsonl`` (or ``path``), one JSON object per line.

    Each line is flushed when written, so a report can read a run that is still going.
    Non-finite numbers are written as ``null``. A fresh run replaces the file; on resume, rows
    logged after the checkpoint (by the run that was interrupted) are dropped first, so every
    step appears once; a second ``fit`` of the same trainer appends.

    Example:
        >>> import tempfile, pathlib
        >>> sink = JSONLSink()
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> sink.open(RunInfo(run_dir))
        >>> sink.write({"kind": "train", "step": 10, "total": 1.5})
        >>> sink.close()
        >>> (run_dir / "metrics.jsonl").read_text()
        '{"kind": "train", "step": 10, "total": 1.5}\\n'
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = check_path(path, "`path` of JSONLSink") if path is not None else None
        self._handle: IO[str] | None = None

    def open(self, run: RunInfo) -> None:
        path = self.path
        if path is None:
            if run.run_dir is None:
                raise ValueError("JSONLSink needs `path` or a trainer with a `run_dir`")
            path = run.run_dir / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if run.resumed and path.exists():
            _truncate_after(path, run.start_step)
        # Kept open for the whole run (closed in close()): one flushed line per row.
        self._handle = open(path, "w" if run.fresh else "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        if self._handle is None:
            raise RuntimeError("JSONLSink.write() before open()")
        clean = {key: finite_or_none(value) for key, value in record.items()}
        self._handle.write(json.dumps(clean, allow_nan=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __repr__(self) -> str:
        return f"JSONLSink(path={str(self.path) if self.path else None!r})"


def _truncate_after(path: Path, step: int) -> None:
    """Keep only rows with ``step <= step`` (atomically: the old file stays until the rename)."""
    kept = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the interruption
            if row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
