"""Small helpers shared by the gradient-level solvers, which all work on a T x T Gram matrix.

Every gradient-level method in this package reduces to "per-loss weights from the Gram matrix
``G = J J^T`` of the per-loss gradients" (the update is then ``J^T w``). The solvers run on
the Gram matrix's own device, in float64 where the device has it, and never read a value back
to the host on an accelerator: loops there run a fixed number of iterations. On the CPU a
value read is free (there is no device to wait for), so loops stop as soon as they converge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["can_read", "check_gram", "normalize_gram", "single_thread", "solver_dtype"]


def solver_dtype(device: torch.device) -> torch.dtype:
    """float64 for the small solves, except on devices without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def can_read(tensor: Tensor) -> bool:
    """Whether reading a value of ``tensor`` on the host costs no device synchronization.

    True on the CPU only. Solvers use it to stop early there; on accelerators they run their
    fixed iteration budget so the step never waits for the device.
    """
    return tensor.device.type == "cpu"


def check_gram(gram: Tensor, what: str) -> Tensor:
    """Return ``gram`` if it is a square matrix with at least one row; raise naming ``what``."""
    if not isinstance(gram, Tensor) or gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
        raise ValueError(f"`gram` of {what} must be a square (T, T) matrix; got {shape}")
    if gram.shape[0] == 0:
        raise ValueError(f"`gram` of {what} must have at least one row; got shape (0, 0)")
    return gram


def normalize_gram(gram: Tensor) -> tuple[Tensor, Tensor]:
    """``(gram / trace, trace)`` in the solver dtype, symmetrized; repaired if indefinite.

    Every method here is invariant to a common scale of the gradients, so the solvers see a
    matrix of trace 1: tolerances then mean the same thing for a loss of 1e-6 and of 1e6.

    A float32 Gram matrix of nearly dependent gradients (two opposite ones, at a
    Pareto-stationary point) can come out slightly indefinite from rounding alone, and an
    eigenvalue of -1e-8 is enough to make a square root NaN or a quadratic program unbounded.
    Only then (a Cholesky factorization fails; checked without reading the device) the
    diagonal is shifted by ``T * eps`` of the Gram matrix's dtype, the size of that rounding.
    A positive definite matrix is left exactly as it is: a shift at every step would bias the
    methods wherever the gradients are nearly dependent, i.e. all along the Pareto front
    (measured on the toy example: Nash-MTL and MGDA then drift towards the larger loss).
    """
    work = gram.to(solver_dtype(gram.device))
    work = 0.5 * (work + work.mT)
    trace = work.diagonal().sum()
    positive = trace > 0
    work = work / torch.where(positive, trace, torch.ones_like(trace))
    t = work.shape[0]
    _, info = torch.linalg.cholesky_ex(work)
    shift = torch.where(positive & (info > 0), t * torch.finfo(gram.dtype).eps, 0.0)
    eye = torch.eye(t, dtype=work.dtype, device=work.device)
    return work + shift * eye, trace


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """Run the tiny T x T solver operations on one CPU thread.

    With several intra-op threads, MKL and ATen split even a 24 x 8 matmul or a batch of 8 x 8
    solves across threads; when the machine is busy, each such split waits for a thread the OS
    has not scheduled, and an operation that takes 2 us alone takes a scheduler time slice
    (measured: 40-50 ms, on 2 shared cores). The solvers do microseconds of arithmetic, so one
    thread is always faster for them. Nothing changes on other devices; the thread count is
    restored on exit.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
