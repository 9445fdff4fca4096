from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiloss.report.downsample import bucket, bucket_matrix, smooth, smoothing_window

_series = st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300)


@given(_series, st.integers(1, 50))
def test_bucket_matches_a_naive_split(values: list[float], points: int) -> None:
    y = np.array(values)
    out = bucket(np.arange(y.size), y, points)
    assert out.mean.size == min(y.size, points)
    if y.size <= points:
        assert out.mean.tolist() == values
        return
    # Reference: cut the index range into `points` near-equal runs by hand.
    edges = [int(i * y.size / points) for i in range(points + 1)]
    for k in range(points):
        chunk = y[edges[k] : edges[k + 1]]
        assert out.mean[k] == pytest.approx(chunk.mean(), rel=1e-9, abs=1e-6)
        assert out.low[k] == chunk.min()
        assert out.high[k] == chunk.max()
        assert out.x[k] == pytest.approx(np.arange(edges[k], edges[k + 1]).mean())


def test_bucket_drops_non_finite_values() -> None:
    out = bucket(np.arange(4), np.array([1.0, np.nan, np.inf, 3.0]), 10)
    assert out.x.tolist() == [0.0, 3.0]
    assert out.mean.tolist() == [1.0, 3.0]


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=50), st.floats(1.0, 20.0))
def test_smooth_matches_the_debiased_ema_formula(values: list[float], window: float) -> None:
    alpha = 2.0 / (window + 1.0)
    out = smooth(np.array(values), window)
    # Closed form: sum_k alpha (1-alpha)^(t-k) x_k / sum_k alpha (1-alpha)^(t-k).
    for t in range(len(values)):
        weights = [(1 - alpha) ** (t - k) for k in range(t + 1)]
        expected = sum(w * x for w, x in zip(weights, values[: t + 1], strict=True)) / sum(weights)
        assert out[t] == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_smooth_skips_nan_and_window_one_is_identity() -> None:
    out = smooth(np.array([np.nan, 2.0, np.nan, 2.0]), 3.0)
    assert np.isnan(out[0])
    assert out[1:].tolist() == [2.0, 2.0, 2.0]
    assert smooth(np.array([1.0, 5.0]), 1.0).tolist() == [1.0, 5.0]


def test_bucket_matrix_averages_ignoring_nan() -> None:
    matrix = np.array([[1.0, np.nan], [3.0, np.nan], [5.0, 4.0], [7.0, 6.0]])
    x, means = bucket_matrix(np.array([10, 20, 30, 40]), matrix, 2)
    assert x.tolist() == [15.0, 35.0]
    assert means[:, 0].tolist() == [2.0, 6.0]
    assert np.isnan(means[0, 1])
    assert means[1, 1] == 5.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: bucket(np.arange(3), np.arange(3.0), 0), "`max_points` must be >= 1; got 0"),
        (lambda: bucket_matrix(np.arange(3), np.zeros(3), 2), r"`matrix` must have shape"),
        (lambda: smooth(np.arange(3.0), 0.5), "`window` must be >= 1.0; got 0.5"),
        (lambda: smoothing_window(10, 2.0), "`smoothing` must be <= 1.0; got 2.0"),
    ],
)
def test_bad_arguments(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
