from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiloss.report.advisor import AdvisorConfig
from multiloss.report.advisor.evidence import Context
from multiloss.report.advisor.reweight import gram_weight, linear_weight, predicted_shares
from multiloss.report.table import Table


def _table(weights: list[float], grads: np.ndarray, rows: int = 20) -> Table:
    """Rows whose diagnostics come from explicit gradient vectors (the reference)."""
    names = [f"l{i}" for i in range(len(weights))]
    update = sum(w * g for w, g in zip(weights, grads, strict=True))
    energy = float(update @ update)
    row: dict[str, float] = {}
    for i, name in enumerate(names):
        row[f"loss/{name}"] = 1.0
        row[f"weight/{name}"] = weights[i]
        row[f"grad/norm/{name}"] = float(np.linalg.norm(grads[i]))
        row[f"grad/share/{name}"] = float(weights[i] * grads[i] @ update) / energy
        for j in range(i + 1, len(names)):
            cos = grads[i] @ grads[j] / (np.linalg.norm(grads[i]) * np.linalg.norm(grads[j]))
            row[f"grad/cos/{name}|{names[j]}"] = float(cos)
    return Table.from_rows([{"step": s, **row} for s in range(1, rows + 1)])


@given(
    st.lists(st.floats(0.01, 10.0), min_size=2, max_size=4),
    st.integers(0, 1000),
    st.floats(0.05, 0.9),
)
def test_gram_weight_hits_the_target_on_real_vectors(
    weights: list[float], seed: int, target: float
) -> None:
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((len(weights), 5)) + 1.0  # mostly aligned
    ctx = Context.build(_table(weights, grads), AdvisorConfig())
    new = gram_weight(ctx, "l0", target)
    if new is None:
        return  # degenerate geometry (e.g. the rest of the update has no energy)
    moved = [new, *weights[1:]]
    update = sum(w * g for w, g in zip(moved, grads, strict=True))
    share = float(new * grads[0] @ update) / float(update @ update)
    assert share == pytest.approx(target, abs=1e-6)


def test_weighted_norms_are_recognised() -> None:
    # Same run, but grad/norm logged for the weighted gradient: the reading must adapt.
    grads = np.array([[1.0, 0.0], [0.6, 0.8]])
    weights = [0.01, 1.0]
    table = _table(weights, grads)
    rows = []
    for s in range(1, 21):
        rows.append({key: float(table.column(key)[s - 1]) for key in table} | {"step": s})
        rows[-1]["grad/norm/l0"] *= 0.01
    ctx = Context.build(Table.from_rows(rows), AdvisorConfig())
    new = gram_weight(ctx, "l0", 0.5)
    assert new is not None
    update = new * grads[0] + grads[1]
    assert float(new * grads[0] @ update) / float(update @ update) == pytest.approx(0.5)


def test_missing_cosines_give_none() -> None:
    rows = [{"step": s, "weight/a": 1.0, "weight/b": 1.0, "grad/norm/a": 1.0, "grad/norm/b": 1.0,
             "loss/a": 1.0, "loss/b": 1.0} for s in range(1, 21)]  # fmt: skip
    assert gram_weight(Context.build(Table.from_rows(rows), AdvisorConfig()), "a", 0.1) is None


def test_linear_weight_solves_the_magnitude_model() -> None:
    # p = wL / (wL + R): with wL = 1e-3 and R = 9.999 -> p = 1e-4.
    new = linear_weight(1e-3, 1e-4, 0.1)
    assert new / (new + 9.999) == pytest.approx(0.1)


def test_predicted_shares_by_hand() -> None:
    # a = 2, b = 1 at cosine -0.8: a.U = 4 - 1.6 = 2.4, b.U = -1.6 + 1 = -0.6, |U|^2 = 1.8.
    cos = np.array([[1.0, -0.8], [-0.8, 1.0]])
    shares = predicted_shares(np.array([2.0, 1.0]), cos)
    assert shares.tolist() == pytest.approx([4 / 3, -1 / 3])  # b pushes against a
