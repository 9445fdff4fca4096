"""Shrink long series for plotting: bucket means with min/max envelopes, and smoothing.

A run of thousands of steps has far more points than a plot has pixels. Plotting every point is
slow and makes the embedded images large, so series are cut into at most ``max_points``
contiguous buckets: the bucket mean is the line, the bucket min and max are a faint band, so
spikes stay visible even though individual points are gone.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from multiloss._validation import check_finite_float, check_int

__all__ = ["Buckets", "bucket", "bucket_matrix", "smooth", "smoothing_window"]

FloatArray = NDArray[np.float64]


class Buckets(NamedTuple):
    """A downsampled series: x (mean step of each bucket), mean, min and max values.

    Example:
        >>> bucket(np.arange(4), np.array([1.0, 3.0, 5.0, 7.0]), 2).x.tolist()
        [0.5, 2.5]
    """

    x: FloatArray
    mean: FloatArray
    low: FloatArray
    high: FloatArray


def _edges(count: int, max_points: int) -> NDArray[np.intp]:
    """Start index of each of ``min(count, max_points)`` near-equal contiguous buckets."""
    buckets = min(count, max_points)
    return np.linspace(0, count, buckets + 1).astype(np.intp)[:-1]


def bucket(x: NDArray[np.generic], y: NDArray[np.generic], max_points: int) -> Buckets:
    """Cut finite points of ``(x, y)`` into at most ``max_points`` buckets.

    Non-finite ``y`` values are dropped first. With no more points than ``max_points`` the
    series comes back unchanged (``low`` and ``high`` equal to ``mean``).

    Example:
        >>> out = bucket(np.arange(6), np.array([1.0, 3.0, 2.0, 2.0, 0.0, 4.0]), 3)
        >>> out.mean.tolist(), out.low.tolist(), out.high.tolist()
        ([2.0, 2.0, 2.0], [1.0, 2.0, 0.0], [3.0, 2.0, 4.0])
    """
    check_int(max_points, "`max_points`", min_value=1)
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if ys.size <= max_points:
        return Buckets(xs, ys, ys, ys)
    starts = _edges(ys.size, max_points)
    sizes = np.diff(np.append(starts, ys.size))
    return Buckets(
        np.add.reduceat(xs, starts) / sizes,
        np.add.reduceat(ys, starts) / sizes,
        np.minimum.reduceat(ys, starts),
        np.maximum.reduceat(ys, starts),
    )


def bucket_matrix(
    x: NDArray[np.generic], matrix: NDArray[np.generic], max_points: int
) -> tuple[FloatArray, FloatArray]:
    """Average the rows of ``matrix`` (time x series) into at most ``max_points`` time buckets.

    NaN entries are ignored in each mean; a bucket where a series has no value stays NaN.

    Example:
        >>> x, m = bucket_matrix(np.arange(4), np.array([[1.0], [3.0], [np.nan], [5.0]]), 2)
        >>> x.tolist(), m[:, 0].tolist()
        ([0.5, 2.5], [2.0, 5.0])
    """
    check_int(max_points, "`max_points`", min_value=1)
    xs = np.asarray(x, dtype=np.float64)
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != xs.shape[0]:
        raise ValueError(
            f"`matrix` must have shape (len(x), series) = ({xs.shape[0]}, k); got {values.shape}"
        )
    if xs.size <= max_points:
        return xs, values
    starts = _edges(xs.size, max_points)
    sizes = np.diff(np.append(starts, xs.size))
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=0)
    counts = np.add.reduceat(finite.astype(np.float64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return np.add.reduceat(xs, starts) / sizes, means


def smoothing_window(points: int, smoothing: float) -> float:
    """The EMA window for a series of ``points``: ``smoothing`` times its length, at least 1."""
    check_finite_float(smoothing, "`smoothing`", min_value=0.0, max_value=1.0)
    return max(1.0, smoothing * points)


def smooth(values: NDArray[np.generic], window: float) -> FloatArray:
    """Bias-corrected exponential moving average with span ``window`` (1 = no smoothing).

    The correction (divide by the running sum of weights) keeps the first points from being
    pulled towards zero, as in TensorBoard's smoothing. NaN values are skipped, not spread.

    Example:
        >>> smooth(np.array([1.0, 1.0, 4.0]), 3.0).round(3).tolist()
        [1.0, 1.0, 2.714]
    """
    check_finite_float(window, "`window`", min_value=1.0)
    ys = np.asarray(values, dtype=np.float64)
    alpha = 2.0 / (window + 1.0)
    if alpha >= 1.0:
        return ys.copy()
    out = np.empty_like(ys)
    level = 0.0
    mass = 0.0
    decay = 1.0 - alpha
    for index, value in enumerate(ys.tolist()):
        if value == value:  # not NaN
            level = decay * level + alpha * value
            mass = decay * mass + alpha
        out[index] = level / mass if mass > 0.0 else np.nan
    return out
