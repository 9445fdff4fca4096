"""Read a run directory back: ``metrics.jsonl`` rows by kind, and ``run.json``.

The schema is fixed in docs/contracts.md section 4. The reader is lenient where a live run
forces it to be: the last line may be half written (the trainer is still running), and a run
resumed from a checkpoint logs some steps a second time, in which case the later rows win.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiloss._validation import check_path, describe
from multiloss.report.table import Table

__all__ = ["METRICS_FILE", "RUN_FILE", "Run", "read_run", "read_runs"]

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class Run:
    """One run read back from its directory.

    Attributes:
        path: The run directory.
        name: Short label for plots and tables (the directory name unless given).
        info: The contents of ``run.json`` (empty when the file is missing or unreadable).
        train: Rows of kind ``"train"``.
        val: Rows of kind ``"val"``.
        events: Rows of kind ``"event"``, as dicts, in order.
        partial: Whether the last line was incomplete (the run is probably still being written).
        skipped_lines: Lines that were not valid JSON objects, not counting a partial last line.

    Example:
        >>> import tempfile
        >>> from multiloss.report.synthetic import SyntheticLoss, fabricate_run
        >>> folder = fabricate_run(tempfile.mkdtemp(), [SyntheticLoss("task")], steps=20)
        >>> run = read_run(folder)
        >>> run.losses, len(run.train)
        (['task'], 20)
    """

    path: Path
    name: str
    info: Mapping[str, Any]
    train: Table
    val: Table
    events: Sequence[Mapping[str, Any]] = field(default_factory=list)
    partial: bool = False
    skipped_lines: int = 0

    @property
    def losses(self) -> list[str]:
        """Loss names, in order of first appearance in the training rows, then validation."""
        names = self.train.names("loss/")
        seen = set(names)
        names += [name for name in self.val.names("loss/") if name not in seen]
        return names

    @property
    def last_step(self) -> int:
        """The last optimizer step logged (0 when nothing was)."""
        steps = [int(table.steps[-1]) for table in (self.train, self.val) if len(table)]
        return max(steps, default=0)

    def __repr__(self) -> str:
        state = ", partial" if self.partial else ""
        return (
            f"Run(name={self.name!r}, losses={len(self.losses)}, train_rows={len(self.train)}, "
            f"val_rows={len(self.val)}, events={len(self.events)}{state})"
        )


def _supersede(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Append ``row``, first dropping rows at or after its step (a resume rewrote them)."""
    step = row["step"]
    while rows and rows[-1]["step"] >= step:
        rows.pop()
    rows.append(row)


def _parse_lines(data: bytes, source: Path) -> tuple[list[dict[str, Any]], bool, int]:
    """Decode the JSONL bytes; returns rows, whether the tail was partial, and bad lines."""
    partial = bool(data) and not data.endswith(b"\n")
    lines = data.split(b"\n")
    if partial:
        # A writer appends whole lines; an unterminated tail is a line still being written.
        tail = lines.pop()
        try:
            parsed = json.loads(tail)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            lines.append(tail)  # A complete object that only lacks its newline: keep it.
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            bad += 1
            continue
        rows.append(row)
    if bad:
        warnings.warn(
            f"{source}: skipped {bad} line(s) that are not JSON objects with an integer 'step'",
            RuntimeWarning,
            stacklevel=3,
        )
    return rows, partial, bad


def _read_info(folder: Path) -> dict[str, Any]:
    path = folder / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def read_run(path: str | Path, *, name: str | None = None, what: str = "`path` of read_run") -> Run:
    """Read the run in directory ``path``.

    Args:
        path: A run directory holding ``metrics.jsonl`` (and usually ``run.json``).
        name: Label for plots; defaults to the directory's name.
        what: How to name ``path`` in errors (callers pass their own parameter's name).

    Raises:
        FileNotFoundError: ``path`` is not a directory or has no ``metrics.jsonl``.
    """
    folder = check_path(path, what)
    if not folder.is_dir():
        state = "a file" if folder.exists() else "nothing there"
        raise FileNotFoundError(
            f"{what} must be an existing run directory; got {str(path)!r} ({state})"
        )
    metrics = folder / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(
            f"run directory {str(folder)!r} must contain {METRICS_FILE}; found none "
            "(is it a multiloss run directory, and has the trainer logged anything yet?)"
        )
    rows, partial, bad = _parse_lines(metrics.read_bytes(), metrics)
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for row in rows:
        kind = row.get("kind", "train")
        if kind == "train":
            _supersede(train, row)
        elif kind == "val":
            _supersede(val, row)
        else:
            events.append(row)
    label = name if name is not None else (folder.resolve().name or str(folder))
    return Run(
        path=folder,
        name=label,
        info=_read_info(folder),
        train=Table.from_rows(train),
        val=Table.from_rows(val),
        events=events,
        partial=partial,
        skipped_lines=bad,
    )


def read_runs(paths: Sequence[str | Path], what: str = "`run_dirs`") -> list[Run]:
    """Read several runs, giving each a distinct name (parent folders added where needed)."""
    if isinstance(paths, str | Path) or not isinstance(paths, Sequence):
        raise TypeError(f"{what} must be a run directory or a list of them; got {describe(paths)}")
    if not paths:
        raise ValueError(f"{what} must name at least one run directory; got none")
    folders = [check_path(path, f"each of {what}").resolve() for path in paths]
    unique = list(dict.fromkeys(folders))  # the same folder twice must not clash with itself
    names = [_distinct_name(folder, unique) for folder in folders]
    counts: dict[str, int] = {}
    labels = []
    for label in names:
        counts[label] = counts.get(label, 0) + 1
        labels.append(label if counts[label] == 1 else f"{label} ({counts[label]})")
    return [
        read_run(path, name=label, what=f"each of {what}")
        for path, label in zip(paths, labels, strict=True)
    ]


def _distinct_name(folder: Path, folders: list[Path]) -> str:
    """The shortest trailing part of ``folder``'s path that no other folder shares."""
    parts = folder.parts
    for depth in range(1, len(parts) + 1):
        label = "/".join(parts[-depth:])
        clashes = sum(1 for other in folders if "/".join(other.parts[-depth:]) == label)
        if clashes <= 1:
            return label
    return str(folder)
