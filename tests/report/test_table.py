from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiloss.report.table import Table

_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(-1000, 1000),
    st.none(),
    st.text(max_size=3),
)
_rows = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "loss/x", "kind"]), _values, max_size=4),
    max_size=20,
)


@given(_rows)
def test_from_rows_matches_a_naive_loop(rows: list[dict[str, object]]) -> None:
    rows = [{"step": i, **row} for i, row in enumerate(rows)]
    table = Table.from_rows(rows)
    keys = {k for row in rows for k, v in row.items() if k != "step" and type(v) in (int, float)}
    assert set(table.keys()) <= keys | {k for row in rows for k in row if k != "step"}
    for key in keys:
        for index, row in enumerate(rows):
            value = row.get(key)
            got = table.column(key)[index]
            if type(value) in (int, float):
                assert got == pytest.approx(float(value))  # type: ignore[arg-type]
            else:
                assert math.isnan(got)
    assert table.steps.tolist() == list(range(len(rows)))


def test_missing_column_is_all_nan_and_columns_are_read_only() -> None:
    table = Table.from_rows([{"step": 3, "a": 1.0}])
    assert np.isnan(table.column("nothing")).all()
    with pytest.raises(ValueError, match="read-only"):
        table.column("a")[0] = 2.0


def test_names_valid_tail_and_slice() -> None:
    table = Table.from_rows(
        [{"step": s, "loss/a": float(s), "loss/b": None if s % 2 else 1.0} for s in range(1, 6)]
    )
    assert table.names("loss/") == ["loss/a"[5:], "b"]
    steps, values = table.valid("loss/b")
    assert steps.tolist() == [2, 4]
    assert values.tolist() == [1.0, 1.0]
    assert table.tail(2).steps.tolist() == [4, 5]
    assert table.tail(99).steps.tolist() == [1, 2, 3, 4, 5]
    assert "loss/a" in table
    assert "x" not in table
    assert "rows=5" in repr(table)
    assert len(Table.empty()) == 0
    assert "steps=none" in repr(Table.empty())


def test_column_shape_must_match_steps() -> None:
    with pytest.raises(ValueError, match=r"column 'a' of Table must have shape \(2,\)"):
        Table(np.arange(2), {"a": np.zeros(3)})


def test_a_numeric_looking_string_is_not_a_number() -> None:
    # Found by the property test above: numpy, asked for floats, reads "0" as 0.0.
    table = Table.from_rows([{"step": 0, "a": 0.0}, {"step": 1, "a": "0"}])
    assert table.column("a")[0] == 0.0
    assert math.isnan(table.column("a")[1])
