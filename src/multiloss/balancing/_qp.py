"""A small exact solver for the convex problems behind UPGrad and CAGrad (no external solver).

Both methods need the minimizer of a smooth convex function of a few variables (one per loss)
over a simple polyhedron:

* UPGrad: ``min_v  v^T G v``  subject to ``v >= u`` (one problem per loss, solved as a batch);
* CAGrad: ``min_w  b^T w + c sqrt(w^T G w)``  over the probability simplex.

The solver is a primal active-set Newton method (Nocedal & Wright, *Numerical Optimization*,
Algorithm 16.3, with a Newton step in place of the exact QP step for non-quadratic objectives):
variables held at their lower bound form the working set; each iteration takes a Newton step
on the free variables (with the simplex's equality constraint as one extra KKT row), stops at
the first bound it would cross and fixes that variable, and, once at the minimizer of the
current face, releases the fixed variable with the most negative Lagrange multiplier. For a
quadratic objective this terminates in finitely many steps at the exact minimizer; for CAGrad's
objective the Newton steps converge quadratically on the final face.

Everything is batched over problems with masks instead of branches, so one iteration is a
handful of tensor operations with no value read on the host. On the CPU the loop stops as soon
as every problem is solved; on accelerators it runs ``max_iter`` iterations (a solved problem
stays put), so the step never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from multiloss.balancing._linalg import can_read

__all__ = ["GradHess", "minimize_active_set"]

#: ``v (N, T) -> (gradient (N, T), Hessian (N, T, T))`` of the objective at ``v``.
GradHess = Callable[[Tensor], tuple[Tensor, Tensor]]
#: ``v (..., T) -> objective value (...)``; only needed for non-quadratic objectives.
Value = Callable[[Tensor], Tensor]

# Step sizes tried by the backtracking line search, as fractions of the largest feasible step.
_BACKTRACK = 24
_ARMIJO = 1e-4


def minimize_active_set(
    grad_hess: GradHess,
    start: Tensor,
    lower: Tensor,
    *,
    fixed: Tensor,
    simplex: bool,
    value: Value | None = None,
    max_iter: int,
    tol: float = 1e-10,
    ridge: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Minimize a convex objective subject to ``v >= lower`` (and ``sum(v) == 1`` if ``simplex``).

    Args:
        grad_hess: Gradient and Hessian of the objective (batched over N problems).
        start: A feasible starting point, shape (N, T).
        lower: Lower bounds, shape (N, T).
        fixed: Variables that start in the working set (held at ``lower``), shape (N, T).
            They must equal ``lower`` in ``start``.
        simplex: Whether ``sum(v) == 1`` is also imposed.
        value: The objective's value; ``None`` means the objective is quadratic, so the Newton
            step is exact and needs no line search.
        max_iter: Iteration budget (all of it is spent on accelerators).
        tol: Newton steps and multipliers below this (in the problem's own scale) count as 0.
        ridge: Added to the free block of the Hessian so that a singular Gram matrix (linearly
            dependent gradients) still gives a well-defined step.

    Returns:
        ``(v, iterations)``: the minimizers (N, T) and, as a 0-dim tensor, the number of
        iterations the slowest problem needed.
    """
    quadratic = value is None
    v = start.clone()
    fixed = fixed.clone()
    n, t = v.shape
    arange = torch.arange(t, device=v.device)
    done = torch.zeros(n, dtype=torch.bool, device=v.device)
    # At a face minimizer: a quadratic problem whose free set is empty is trivially there.
    at_min = fixed.all(dim=1) if quadratic else torch.zeros_like(done)
    iterations = torch.zeros((), dtype=torch.long, device=v.device)
    inf = float("inf")
    readable = can_read(v)
    for _ in range(max_iter):
        grad, hess = grad_hess(v)
        # 1. At a face minimizer, test the multipliers of the fixed variables.
        free = ~fixed
        if simplex:
            count = free.sum(dim=1, keepdim=True).clamp(min=1)
            mu = torch.where(free, grad, 0).sum(dim=1, keepdim=True) / count
        else:
            mu = torch.zeros_like(grad[:, :1])
        multiplier = torch.where(fixed, grad - mu, inf)
        # amin + argmin rather than min(dim=): the latter is orders of magnitude slower on
        # tiny CPU tensors in some torch builds (measured 16 ms for an 8 x 8 input).
        least, which = multiplier.amin(dim=1), multiplier.argmin(dim=1)
        negative = least < -tol
        done = done | (at_min & ~negative)
        release = at_min & negative & ~done
        fixed = fixed & ~(release[:, None] & (arange == which[:, None]))
        if readable and bool(done.all()):
            break
        iterations = iterations + (~done).any().long()
        # 2. Newton step on the free variables.
        free = ~fixed
        direction = _newton_direction(grad, hess, free, simplex, ridge)
        # 3. Longest step that keeps every free variable above its bound.
        shrinking = free & (direction < 0)
        room = torch.where(shrinking, (lower - v) / torch.where(shrinking, direction, -1), inf)
        room = room.clamp(min=0)
        largest, blocker = room.amin(dim=1), room.argmin(dim=1)
        step = largest.clamp(max=1.0)
        if value is not None:
            step = _backtrack(value, v, grad, direction, step)
        step = torch.where(done, 0, step)
        v = v + step[:, None] * direction
        # 4. A step that reached a bound puts that variable in the working set, exactly.
        hit = (step >= largest) & (largest < 1) & ~done
        snap = hit[:, None] & (arange == blocker[:, None])
        v = torch.where(snap, lower, v)
        fixed = fixed | snap
        small = (step[:, None] * direction).abs().amax(dim=1) <= tol
        at_min = ~hit & (torch.ones_like(small) if quadratic else small)
    return v, iterations


def _newton_direction(
    grad: Tensor, hess: Tensor, free: Tensor, simplex: bool, ridge: float
) -> Tensor:
    """Solve the KKT system of the Newton step restricted to the free variables.

    Fixed variables get an identity row (their step is 0); with ``simplex`` one more row asks
    the free steps to sum to 0. Masks keep the batch a single ``solve`` call.
    """
    n, t = grad.shape
    pair = free[:, :, None] & free[:, None, :]
    eye = torch.eye(t, dtype=grad.dtype, device=grad.device).expand(n, t, t)
    # Ridge relative to each diagonal entry, so that a loss with a tiny gradient is not
    # regularized more than one with a large gradient; the floor keeps a zero row solvable.
    diag = hess.diagonal(dim1=1, dim2=2).abs()
    floor = diag.amax(dim=1, keepdim=True).clamp(min=1e-12) * 1e-12
    shift = ridge * (diag + floor)
    matrix = torch.where(pair, hess, 0) + eye * torch.where(free, shift, 1.0)[:, None, :]
    rhs = torch.where(free, -grad, 0)
    if simplex:
        ones = free.to(grad.dtype)
        top = torch.cat([matrix, ones[:, :, None]], dim=2)
        bottom = torch.cat([ones[:, None, :], torch.zeros_like(ones[:, :1, None])], dim=2)
        matrix = torch.cat([top, bottom], dim=1)
        rhs = torch.cat([rhs, torch.zeros_like(rhs[:, :1])], dim=1)
    # solve_ex does not check for singularity, so it does not synchronize on accelerators.
    solution, _ = torch.linalg.solve_ex(matrix, rhs[:, :, None])
    return torch.where(free, solution[:, :t, 0], 0)


def _backtrack(value: Value, v: Tensor, grad: Tensor, direction: Tensor, step: Tensor) -> Tensor:
    """The largest of ``step * 2**-k`` meeting the Armijo condition, or 0 if none does.

    All candidates are evaluated at once (no data-dependent loop); 0 means the Newton step no
    longer decreases the objective measurably, i.e. the face minimizer is reached.
    """
    k = torch.arange(_BACKTRACK, dtype=v.dtype, device=v.device)
    candidates = step[:, None] * torch.pow(0.5, k)[None, :]  # (N, K)
    points = v[:, None, :] + candidates[:, :, None] * direction[:, None, :]
    slope = (grad * direction).sum(dim=1, keepdim=True)
    accepted = value(points) <= value(v)[:, None] + _ARMIJO * candidates * slope
    # First accepted candidate (largest step); argmax of a bool tensor gives the first True.
    first = accepted.to(torch.int8).argmax(dim=1)
    chosen = candidates.gather(1, first[:, None])[:, 0]
    return torch.where(accepted.any(dim=1), chosen, 0)
