"""PeriodMetrics: period means match a direct computation, whatever the mix of passes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.training.metrics import PeriodMetrics

value = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)
a_pass = st.tuples(
    st.sampled_from([("a",), ("a", "b"), ("b", "c")]),  # losses that come and go
    st.lists(value, min_size=3, max_size=3),
    st.lists(value, min_size=3, max_size=3),
    st.booleans(),  # weights learned by a balancer (tensors) or plain floats
    st.integers(min_value=1, max_value=5),  # count (examples in the pass)
)


@settings(max_examples=60, deadline=None)
@given(passes=st.lists(a_pass, min_size=1, max_size=8))
def test_means_match_a_direct_computation(passes: list) -> None:
    metrics = PeriodMetrics()
    by_group: dict[tuple[str, ...], list] = {}
    for names, raws, weights, learned, count in passes:
        raw = torch.tensor(raws[: len(names)])
        used = (
            [torch.tensor(w) for w in weights[: len(names)]] if learned else weights[: len(names)]
        )
        metrics.add(names, raw, used, count=count)
        metrics.add_metrics({"t": torch.tensor(raws[0]), "f": 2.0})
        by_group.setdefault(names, []).append((raw.tolist(), weights[: len(names)], count))
    result = metrics.read()
    every = [(names, row) for names, rows in by_group.items() for row in rows]
    for name in {name for names in by_group for name in names}:
        had = [(row, names.index(name)) for names, row in every if name in names]
        total = sum(row[2] for row, _ in had)
        raw_mean = sum(row[0][j] * row[2] for row, j in had) / total
        weighted = sum(row[0][j] * row[1][j] * row[2] for row, j in had) / total
        assert result[f"loss/{name}"] == pytest.approx(raw_mean, rel=1e-5, abs=1e-4)
        assert result[f"weighted/{name}"] == pytest.approx(weighted, rel=1e-5, abs=1e-2)
    assert result["metric/t"] == pytest.approx(
        sum(torch.tensor(p[1][0]).item() for p in passes) / len(passes), rel=1e-5, abs=1e-4
    )
    assert result["metric/f"] == 2.0
    assert not metrics  # read() resets


def test_one_transfer_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = PeriodMetrics()
    for _ in range(5):
        metrics.add(("a", "b"), torch.rand(2), [1.0, torch.tensor(0.5)])
        metrics.add_metrics({"m": torch.rand(())})
    metrics.set_extra({"x": torch.tensor(3.0), "y": 4.0})
    reads: list[str] = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(
        torch.Tensor, "tolist", lambda self: reads.append("tolist") or original(self)
    )
    result = metrics.read()
    assert reads == ["tolist"]
    assert result["x"] == 3.0
    assert result["y"] == 4.0
    assert result["weight/b"] == 0.5
