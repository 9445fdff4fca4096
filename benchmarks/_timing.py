"""Interleaved timing: run variants in turn, several rounds, report medians and ratios.

These machines are shared and noisy. Timing variant A for a while and then variant B compares
two different machine states; interleaving them round by round and taking medians compares
like with like.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable

__all__ = ["KEEP_HEAP_HELP", "interleave", "keep_heap", "per_call"]

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
