"""DWA against the paper's formula, computed by hand over windows of steps."""

from __future__ import annotations

import math

import pytest
import torch

from multiloss.balancing import DWA


def test_weights_follow_the_ratio_of_the_last_two_window_means() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    dwa = DWA(window=2, temperature=2.0)
    series = {"a": [8.0, 6.0, 4.0, 4.0, 2.0, 1.0], "b": [5.0, 5.0, 5.0, 4.0, 4.0, 4.0]}
    seen = []
    for t in range(6):
        # Two micro-batches per step: the mean of a window is over all its calls.
        dwa.apply({n: w * v[t] for n, v in series.items()}, step=t)
        dwa.apply({n: w * v[t] * 1.5 for n, v in series.items()}, step=t)
        seen.append(dwa.weights.tolist())
        dwa.after_optimizer_step()
    # Windows: steps {0,1}, {2,3}, {4,5}. Weights stay 1 until two windows are complete.
    for t in range(4):
        assert seen[t] == [1.0, 1.0]
    means = {n: [1.25 * (v[k] + v[k + 1]) / 2 for k in (0, 2, 4)] for n, v in series.items()}

    def paper(previous: int) -> list[float]:
        ratios = [means[n][previous] / means[n][previous - 1] for n in ("a", "b")]
        exps = [math.exp(r / 2.0) for r in ratios]
        return [2 * e / sum(exps) for e in exps]

    assert seen[4] == pytest.approx(paper(1), rel=1e-5)
    assert seen[5] == pytest.approx(paper(1), rel=1e-5)
    assert dwa.weights.tolist() == pytest.approx(paper(2), rel=1e-5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`temperature` of DWA must be > 0"):
        DWA(temperature=0.0)
    with pytest.raises(ValueError, match="`window` of DWA must be >= 1"):
        DWA(window=0)


def test_repr() -> None:
    assert repr(DWA()) == "DWA(temperature=2.0, window=25)"
