"""Small helpers shared by the gradient-level solvers, which all work on a T x T Gram matrix.

Every gradient-level method in this package reduces to "per-loss weights from the Gram matrix
``G = J J^T`` of the per-loss gradients" (the update is then ``J^T w``). The solvers run on
the Gram matrix's own device, in float64 where the device has it, and never read a value back
to the host on an accelerator: loops there run a fixed number of iterations. On the CPU a
value read is free (there is no device to wait for), so loops stop as soon as they converge.

On the CPU every solver runs on the host, in NumPy (MGDA's Frank-Wolfe loop on Python floats):
they are tens to hundreds of operations on ``T x T`` arrays, and a tensor operation costs
several microseconds of dispatch where a NumPy one costs about one (measured for 8 losses:
UPGrad's warm solve 0.43 -> 0.25 ms, Nash-MTL's 0.89 -> 0.35 ms). The code is the same for both:
it uses the operations NumPy and torch share (``where``, ``amin``, ``linalg.solve``...),
through the helpers of ``_arrays.py`` for the rest; tests check that both kinds give the same
updates.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from multiloss.balancing._arrays import Array, eye, namespace, to_host

__all__ = [
    "can_read",
    "check_gram",
    "normalize_gram",
    "not_positive_definite",
    "on_host",
    "pair_entries",
    "pair_on_host",
    "repair_pair",
    "single_thread",
    "solver_scope",
    "solver_dtype",
    "solver_matrix",
]


def solver_dtype(device: torch.device) -> torch.dtype:
    """float64 for the small solves, except on devices without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def can_read(tensor: Tensor) -> bool:
    """Whether reading a value of ``tensor`` on the host costs no device synchronization.

    True on the CPU only. Solvers use it to stop early there; on accelerators they run their
    fixed iteration budget so the step never waits for the device.
    """
    return tensor.device.type == "cpu"


#: Whether CPU solvers run in NumPy (:func:`on_host`); tests turn it off to check that the tensor
#: code, which accelerators run, gives the same answers.
HOST_SOLVES = True


def on_host(gram: Tensor) -> bool:
    """Whether a solver should run on the host, in NumPy: for CPU tensors (see above)."""
    return HOST_SOLVES and can_read(gram)


def check_gram(gram: Tensor, what: str) -> Tensor:
    """Return ``gram`` if it is a square matrix with at least one row; raise naming ``what``."""
    if not isinstance(gram, Tensor) or gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        shape = tuple(gram.shape) if isinstance(gram, Tensor) else type(gram).__name__
        raise ValueError(f"`gram` of {what} must be a square (T, T) matrix; got {shape}")
    if gram.shape[0] == 0:
        raise ValueError(f"`gram` of {what} must have at least one row; got shape (0, 0)")
    return gram


def solver_matrix(gram: Tensor, *, host: bool) -> Array:
    """``gram`` where a solver works on it: a float64 NumPy copy on the host, or a tensor in
    the solver dtype on its own device."""
    return to_host(gram) if host else gram.to(solver_dtype(gram.device))


def normalize_gram(gram: Tensor, *, host: bool = False) -> tuple[Array, Array]:
    """``(gram / trace, trace)`` in the solver dtype, symmetrized; repaired if indefinite.

    With ``host=True`` (CPU tensors only) both come back as float64 NumPy values, for a
    solver that runs on the host.

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
    rounding = torch.finfo(gram.dtype).eps
    work = solver_matrix(gram, host=host)
    xp = namespace(work)
    work = 0.5 * (work + work.T)
    trace = xp.sum(xp.linalg.diagonal(work))
    positive = trace > 0
    work = work / xp.where(positive, trace, 1.0)
    t = work.shape[0]
    shift = xp.where(positive & not_positive_definite(work), t * rounding, 0.0)
    return work + shift * eye(t, like=work), trace


def pair_entries(gram: Tensor) -> tuple[float, float, float, float] | None:
    """For two losses on the CPU, the Gram matrix's entries ``(g00, g01, g10, g11)`` as Python
    floats; ``None`` where the general solvers run (more losses, not on the host, or a
    non-finite entry, which the general route turns into non-finite weights, then reported).

    Two losses are the commonest case, and each method has a closed form for them. On Python
    floats it costs a few microseconds; NumPy's general route takes 0.4 to 0.8 ms inside a
    training step (2 cores, 3x512 trunk), where a cold cache makes every small operation
    several times slower than it is alone.

    Example:
        >>> import torch
        >>> pair_entries(torch.tensor([[3.0, -1.0], [-1.0, 1.0]]))
        (3.0, -1.0, -1.0, 1.0)
    """
    if not (on_host(gram) and gram.shape == (2, 2)):
        return None
    (g00, g01), (g10, g11) = gram.detach().to(torch.float64).tolist()
    if not all(math.isfinite(value) for value in (g00, g01, g10, g11)):
        return None
    return g00, g01, g10, g11


def repair_pair(a: float, b: float, d: float, dtype: torch.dtype) -> tuple[float, float]:
    """The diagonal of ``[[a, b], [b, d]]``, shifted by ``2 eps`` of ``dtype`` only where a
    Cholesky factorization fails: :func:`normalize_gram`'s repair, on floats."""
    if a > 0 and d - b * b / a > 0:
        return a, d
    shift = 2 * torch.finfo(dtype).eps
    return a + shift, d + shift


def pair_on_host(gram: Tensor) -> tuple[float, float, float] | None:
    """For two losses on the CPU, :func:`normalize_gram`'s matrix as three Python floats.

    Returns ``(a, b, d)``, the entries of ``[[a, b], [b, d]]`` (trace 1 unless all zero,
    symmetrized, its diagonal shifted by ``2 eps`` only if it is not positive definite, as
    there; a zero matrix stays zero), or ``None`` where :func:`pair_entries` is.

    Example:
        >>> import torch
        >>> pair_on_host(torch.tensor([[3.0, -1.0], [-1.0, 1.0]]))
        (0.75, -0.25, 0.25)
    """
    entries = pair_entries(gram)
    if entries is None:
        return None
    a, b, c, d = entries
    b = 0.5 * (b + c)
    trace = a + d
    if trace <= 0:
        return a, b, d  # all zero (a Gram matrix has no negative diagonal): left as it is
    a, b, d = a / trace, b / trace, d / trace
    a, d = repair_pair(a, b, d, gram.dtype)
    return a, b, d


def not_positive_definite(work: Array) -> Array:
    """Whether a Cholesky factorization of ``work`` fails (a 0-dim bool; no device read)."""
    if isinstance(work, np.ndarray):
        try:
            np.linalg.cholesky(work)
        except np.linalg.LinAlgError:
            return np.bool_(True)
        return np.bool_(False)
    _, info = torch.linalg.cholesky_ex(work)
    return info > 0


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


@contextmanager
def solver_scope(device: torch.device) -> Iterator[None]:
    """Where a solver runs: one CPU thread (:func:`single_thread`), and NumPy's floating-point
    warnings off. A non-finite Gram matrix (an infinite gradient) gives non-finite weights on
    both paths alike, and the balancer stops with its own error naming the method; NumPy's
    "invalid value encountered" warnings would only be noise in front of it."""
    with single_thread(device), np.errstate(all="ignore"):
        yield
