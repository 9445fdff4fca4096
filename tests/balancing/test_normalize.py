"""Normalize: running and initial magnitudes, by hand."""

from __future__ import annotations

import pytest
import torch

from multiloss.balancing import Normalize, Static


def test_running_mean_is_a_bias_corrected_ema_of_the_magnitude() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Normalize(momentum=0.9)
    series = [4.0, -2.0, 8.0]
    ema = 0.0
    for t, value in enumerate(series, start=1):
        w.grad = None
        used = balancer.backward({"x": value * w, "y": w})
        ema = 0.9 * ema + 0.1 * abs(value)
        scale = ema / (1 - 0.9**t)
        assert used["x"] == pytest.approx(1.0 / scale, rel=1e-5)
        assert used["y"] == pytest.approx(1.0, rel=1e-5)
        assert float(w.grad) == pytest.approx(value / scale + 1.0, rel=1e-5)


def test_initial_mode_divides_by_the_first_value() -> None:
    w = torch.nn.Parameter(torch.tensor(1.0))
    balancer = Normalize(Static({"x": 3.0}), mode="initial")
    balancer.backward({"x": 5.0 * w, "y": 0.5 * w})
    used = balancer.backward({"x": 1.0 * w, "y": 7.0 * w})
    assert used == pytest.approx({"x": 3.0 / 5.0, "y": 1.0 / 0.5})


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"`mode` of Normalize must be one of \{'running'"):
        Normalize(mode="max")
    with pytest.raises(ValueError, match=r"`momentum` of Normalize must be in \(0, 1\)"):
        Normalize(momentum=1.0)
    with pytest.raises(ValueError, match="`eps` of Normalize must be > 0"):
        Normalize(eps=0.0)


def test_repr_shows_the_inner_balancer() -> None:
    assert repr(Normalize(Static({"a": 2.0}), mode="initial")) == (
        "Normalize(\n  mode='initial'\n  (inner): Static(weights={'a': 2.0})\n)"
    )
