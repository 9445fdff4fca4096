"""A column table of logged rows: one step axis and one float column per flat key.

The metrics log is a list of flat JSON objects whose keys vary from row to row (a loss may
appear late, diagnostics are logged only at some steps). Plots and the advisor want columns, so
rows become numpy arrays with NaN wherever a row did not carry the key.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Table"]

FloatArray = NDArray[np.float64]


class Table:
    """Logged rows as columns: ``steps`` plus one float64 array per numeric key.

    Non-numeric values (strings, lists, ``null``) are left out; booleans count as numbers.
    Columns are read-only views so that callers cannot corrupt a shared run.

    Args:
        steps: Optimizer step of each row, one per row.
        columns: Key -> values, each the length of ``steps`` (NaN where a row lacks the key).

    Example:
        >>> table = Table.from_rows([{"step": 1, "loss/a": 2.0}, {"step": 2, "loss/b": 1.0}])
        >>> table
        Table(rows=2, steps=1..2, columns=['loss/a', 'loss/b'])
        >>> table.column("loss/a").tolist()
        [2.0, nan]
        >>> table.names("loss/")
        ['a', 'b']
    """

    def __init__(self, steps: NDArray[np.int64], columns: Mapping[str, FloatArray]) -> None:
        steps = np.asarray(steps, dtype=np.int64)
        for key, values in columns.items():
            if values.shape != steps.shape:
                raise ValueError(
                    f"column {key!r} of Table must have shape {steps.shape} like `steps`; "
                    f"got {values.shape}"
                )
        self.steps = steps
        self.steps.flags.writeable = False
        self._columns: dict[str, FloatArray] = {}
        for key, values in columns.items():
            values = np.asarray(values, dtype=np.float64)
            values.flags.writeable = False
            self._columns[key] = values

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Table:
        """Build a table from flat rows; each row needs an integer ``"step"``."""
        rows = list(rows)
        count = len(rows)
        steps = np.fromiter(
            (int(row.get("step", i)) for i, row in enumerate(rows)), np.int64, count
        )
        # Rows written by one logger mostly share their keys, so rows are bucketed by key set
        # and each bucket is converted in one numpy call (C speed), not value by value.
        buckets: dict[tuple[str, ...], list[int]] = {}
        for index, row in enumerate(rows):
            buckets.setdefault(tuple(row), []).append(index)
        columns: dict[str, FloatArray] = {}
        for keys, indices in buckets.items():
            first = rows[indices[0]]
            numeric = [
                key
                for key in keys
                if key != "step"
                and (_is_number(first[key]) or any(_is_number(rows[i][key]) for i in indices))
            ]
            if not numeric:
                continue
            block = _block([rows[i] for i in indices], numeric)
            where = np.asarray(indices)
            for position, key in enumerate(numeric):
                column = columns.get(key)
                if column is None:
                    column = columns[key] = np.full(count, np.nan)
                column[where] = block[:, position]
        ordered = sorted(columns, key=_first_seen(rows))
        return cls(steps, {key: columns[key] for key in ordered})

    @classmethod
    def empty(cls) -> Table:
        """A table with no rows."""
        return cls(np.empty(0, dtype=np.int64), {})

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def keys(self) -> list[str]:
        """All column keys, in order of first appearance."""
        return list(self._columns)

    def column(self, key: str) -> FloatArray:
        """The values of ``key`` (all NaN when no row carried it)."""
        values = self._columns.get(key)
        if values is None:
            return np.full(len(self), np.nan)
        return values

    def names(self, prefix: str) -> list[str]:
        """The key suffixes after ``prefix``, e.g. loss names for ``"loss/"``."""
        size = len(prefix)
        return [key[size:] for key in self._columns if key.startswith(prefix)]

    def valid(self, key: str) -> tuple[NDArray[np.int64], FloatArray]:
        """Steps and values of the rows where ``key`` is a finite number."""
        values = self.column(key)
        keep = np.isfinite(values)
        return self.steps[keep], values[keep]

    def tail(self, rows: int) -> Table:
        """The last ``rows`` rows (all of them when there are fewer)."""
        start = max(len(self) - rows, 0)
        return self.slice(start, len(self))

    def slice(self, start: int, stop: int) -> Table:
        """Rows ``start`` to ``stop`` (exclusive), as a new table."""
        return Table(
            self.steps[start:stop],
            {key: values[start:stop] for key, values in self._columns.items()},
        )

    def __repr__(self) -> str:
        span = f"{self.steps[0]}..{self.steps[-1]}" if len(self) else "none"
        shown = self.keys()[:6]
        more = f" +{len(self._columns) - 6} more" if len(self._columns) > 6 else ""
        return f"Table(rows={len(self)}, steps={span}, columns={shown}{more})"


_NUMBER = (float, int, bool)


def _is_number(value: object) -> bool:
    """A real number: Python's, or numpy's (a trainer may hand over np.float32 values)."""
    return type(value) in _NUMBER or isinstance(value, float | int | np.integer | np.floating)


def _block(rows: list[Mapping[str, Any]], keys: list[str]) -> FloatArray:
    """Rows x keys as floats; a value that is not a number becomes NaN."""
    getter = operator.itemgetter(*keys)
    values = [getter(row) for row in rows] if len(keys) > 1 else [(getter(row),) for row in rows]
    # Let numpy infer the type rather than ask for floats: asked for floats, it would also turn
    # a string such as "0" into 0.0. All numbers give a numeric array (C speed); a null or a
    # string gives an object or a string array, converted value by value.
    try:
        inferred = np.array(values)
    except (TypeError, ValueError):  # ragged: cannot happen for one key set, but be safe
        inferred = np.empty(0, dtype=object)
    if inferred.dtype.kind in "biuf" and inferred.shape == (len(rows), len(keys)):
        return inferred.astype(np.float64, copy=False)
    return np.array(
        [[float(v) if _is_number(v) else np.nan for v in row] for row in values],
        dtype=np.float64,
    ).reshape(len(rows), len(keys))


def _first_seen(rows: list[Mapping[str, Any]]) -> Callable[[str], int]:
    """Sort key giving each column the position where a row first carried it."""
    order: dict[str, int] = {}
    for row in rows:
        for key in row:
            if key not in order:
                order[key] = len(order)
        if len(order) > 10_000:
            break
    return lambda key: order.get(key, len(order))
