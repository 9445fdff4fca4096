"""Interleaved timing: run variants in turn, several rounds, report medians and ratios.

These machines are shared and noisy. Timing variant A for a while and then variant B compares
two different machine states; interleaving them round by round and taking medians compares
like with like.
"""

from __future__ import annotations

import ctypes
import gc
import random
import statistics
import time
from collections.abc import Callable

__all__ = [
    "KEEP_HEAP_HELP",
    "interleave",
    "interleave_samples",
    "keep_heap",
    "paired_ratio",
    "per_call",
    "schedule",
]

KEEP_HEAP_HELP = (
    "keep freed memory in the process (glibc mallopt): no page faults from the allocator "
    "handing memory back to the OS and faulting it in again every step"
)


def keep_heap() -> bool:
    """Ask glibc's malloc to keep freed memory instead of returning it to the OS.

    On the CPU, torch allocates each step's activations and gradients afresh; glibc hands large
    freed blocks back to the OS (``munmap``, heap trimming) and the next step faults them in
    again, page by page. On this machine that was 200 to 1,600 page faults per step of the
    balancing benchmark, varying from one variant to the next with the heap's layout, and it
    moved single variants' medians by up to 1.5x. With both thresholds raised nothing is given
    back after the first steps. This is the setting a user can reproduce with the environment
    variables ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` (or jemalloc), so it is
    an option of the benchmarks, off by default. Returns whether it took effect (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    largest_mmap_threshold = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(
        libc.mallopt(m_mmap_threshold, largest_mmap_threshold)
    )


def per_call(fn: Callable[[], object], *, number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def schedule(names: list[str], rounds: int, *, seed: int = 0) -> list[list[str]]:
    """The order of the variants in each round: shuffled, never the same variant twice in a
    row across two rounds.

    A fixed or alternating order gives each variant the same neighbours every time, and what
    ran just before changes a step's time (the caches and the heap it leaves); alternating
    also runs the first and the last variant twice in a row at every turn. Shuffling spreads
    those effects over every variant alike.

    Example:
        >>> orders = schedule(["a", "b", "c"], rounds=4)
        >>> all(sorted(order) == ["a", "b", "c"] for order in orders)
        True
        >>> all(one[-1] != two[0] for one, two in zip(orders, orders[1:]))
        True
    """
    generator = random.Random(seed)
    orders: list[list[str]] = []
    for _ in range(rounds):
        order = list(names)
        generator.shuffle(order)
        if orders and len(order) > 1 and order[0] == orders[-1][-1]:
            order.append(order.pop(0))
        orders.append(order)
    return orders


def interleave(
    variants: dict[str, Callable[[], float]], *, rounds: int = 7, warmup: int = 1
) -> dict[str, float]:
    """Median over ``rounds`` of each variant's measurement (seconds), variants in turn.

    Each variant is a callable that performs one measurement and returns seconds per unit.
    Each round runs every variant once, in an order of its own (:func:`schedule`).
    """
    samples = interleave_samples(variants, rounds=rounds, warmup=warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def interleave_samples(
    variants: dict[str, Callable[[], float]], *, rounds: int = 7, warmup: int = 1
) -> dict[str, list[float]]:
    """Every round's measurement of each variant, variants in turn (see :func:`interleave`):
    sample ``k`` of two variants were taken in the same round, close in time, so their ratio
    compares like with like (:func:`paired_ratio`)."""
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
        for order in schedule(names, rounds):
            for name in order:
                samples[name].append(variants[name]())
    finally:
        if enabled:
            gc.enable()
    return samples


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a[k] / b[k]``: a ratio that follows the machine's load from one
    round to the next, where the ratio of two medians mixes different moments.

    Example:
        >>> paired_ratio([2.0, 4.0, 2.2], [1.0, 2.0, 1.0])
        2.0
    """
    return statistics.median(x / y for x, y in zip(a, b, strict=True))
