"""Interleaved timing: run variants in turn, several rounds, report medians and ratios.

These machines are shared and noisy. Timing variant A for a while and then variant B compares
two different machine states; interleaving them round by round and taking medians compares
like with like.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

__all__ = ["interleave", "per_call"]


def per_call(fn: Callable[[], object], *, number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleave(
    variants: dict[str, Callable[[], float]], *, rounds: int = 7, warmup: int = 1
) -> dict[str, float]:
    """Median over ``rounds`` of each variant's measurement (seconds), variants in turn.

    Each variant is a callable that performs one measurement and returns seconds per unit.
    The order of variants alternates every round so neither always runs first.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    # The cyclic garbage collector off while timing, as timeit does: its full collections
    # come every so many allocations, and with a fixed round they can land on the same
    # variant every time and move its median (measured: one method's step read 1.5x of
    # Sum instead of 1.25x, depending on which modules had been imported).
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for round_index in range(rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                samples[name].append(variants[name]())
    finally:
        if enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}
