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
handful of array operations with no value read on the host. The arrays are tensors (on an
accelerator) or float64 NumPy arrays (the callers' choice on the CPU, where NumPy's per-call
cost is a fraction of torch's; see ``_linalg.py``): the code uses only what both provide. On the
host the loop stops as soon as every problem is solved; on accelerators it runs ``max_iter``
iterations (a solved problem stays put), so the step never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from multiloss.balancing._arrays import Array, arange, copy, eye, namespace, solve
from multiloss.balancing._linalg import can_read

__all__ = ["GradHess", "minimize_active_set"]

#: ``v (N, T) -> (gradient (N, T), Hessian (N, T, T))`` of the objective at ``v``.
GradHess = Callable[[Array], tuple[Array, Array]]
#: ``v (..., T) -> objective value (...)``; only needed for non-quadratic objectives.
Value = Callable[[Array], Array]

# Step sizes tried by the backtracking line search, as fractions of the largest feasible step.
_BACKTRACK = 24
_ARMIJO = 1e-4


def minimize_active_set(
    grad_hess: GradHess,
    start: Array,
    lower: Array,
    *,
    fixed: Array,
    simplex: bool,
    value: Value | None = None,
    max_iter: int,
    tol: float = 1e-10,
    ridge: float = 1e-12,
) -> tuple[Array, Array]:
    """Minimize a convex objective subject to ``v >= lower`` (and ``sum(v) == 1`` if ``simplex``).

    Args:
        grad_hess: Gradient and Hessian of the objective (batched over N problems).
        start: A feasible starting point, shape (N, T): a tensor, or a float64 NumPy array
            (then every other array here is one too).
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
        ``(v, iterations)``: the minimizers (N, T) and, as a 0-dim array, the number of
        iterations the slowest problem needed.
    """
    xp = namespace(start)
    quadratic = value is None
    v = copy(start)
    fixed = copy(fixed)
    t = v.shape[1]
    index = arange(t, like=v)
    done = xp.zeros_like(v[:, 0]) > 0
    # At a face minimizer: a quadratic problem whose free set is empty is trivially there.
    at_min = xp.all(fixed, axis=1) if quadratic else xp.zeros_like(done)
    iterations = xp.sum(done)  # 0, as a 0-dim integer array of the right kind
    inf = float("inf")
    readable = not isinstance(v, Tensor) or can_read(v)
    for _ in range(max_iter):
        grad, hess = grad_hess(v)
        # 1. At a face minimizer, test the multipliers of the fixed variables.
        free = ~fixed
        if simplex:
            count = xp.clip(xp.sum(free, axis=1, keepdims=True), 1, None)
            mu = xp.sum(xp.where(free, grad, 0), axis=1, keepdims=True) / count
        else:
            mu = xp.zeros_like(grad[:, :1])
        multiplier = xp.where(fixed, grad - mu, inf)
        # amin + argmin rather than min(dim=): the latter is orders of magnitude slower on
        # tiny CPU tensors in some torch builds (measured 16 ms for an 8 x 8 input).
        least, which = xp.amin(multiplier, axis=1), xp.argmin(multiplier, axis=1)
        negative = least < -tol
        done = done | (at_min & ~negative)
        release = at_min & negative & ~done
        fixed = fixed & ~(release[:, None] & (index == which[:, None]))
        if readable and bool(xp.all(done)):
            break
        iterations = iterations + xp.any(~done) * 1
        # 2. Newton step on the free variables.
        free = ~fixed
        direction = _newton_direction(grad, hess, free, simplex, ridge)
        # 3. Longest step that keeps every free variable above its bound.
        shrinking = free & (direction < 0)
        room = xp.where(shrinking, (lower - v) / xp.where(shrinking, direction, -1), inf)
        room = xp.clip(room, 0, None)
        largest, blocker = xp.amin(room, axis=1), xp.argmin(room, axis=1)
        step = xp.clip(largest, None, 1.0)
        # No line search for a step that moves no variable by more than ``tol`` (the face
        # minimizer is reached, and the next iteration tests the multipliers): read on the
        # host only, where it saves the ~25 operations of the search at every warm start.
        if value is not None and not (readable and _moves_less(direction, step, tol)):
            step = _backtrack(value, v, grad, direction, step)
        step = xp.where(done, 0, step)
        v = v + step[:, None] * direction
        # 4. A step that reached a bound puts that variable in the working set, exactly.
        hit = (step >= largest) & (largest < 1) & ~done
        snap = hit[:, None] & (index == blocker[:, None])
        v = xp.where(snap, lower, v)
        fixed = fixed | snap
        small = xp.amax(xp.abs(step[:, None] * direction), axis=1) <= tol
        at_min = ~hit & (xp.ones_like(small) if quadratic else small)
    return v, iterations


def _moves_less(direction: Array, step: Array, tol: float) -> bool:
    """Whether the step moves no variable of any problem by more than ``tol`` (host arrays)."""
    xp = namespace(direction)
    return bool(xp.all(xp.amax(xp.abs(direction), axis=1) * step <= tol))


def _newton_direction(grad: Array, hess: Array, free: Array, simplex: bool, ridge: float) -> Array:
    """Solve the KKT system of the Newton step restricted to the free variables.

    Fixed variables get an identity row (their step is 0); with ``simplex`` one more row asks
    the free steps to sum to 0. Masks keep the batch a single ``solve`` call.
    """
    xp = namespace(grad)
    t = grad.shape[1]
    pair = free[:, :, None] & free[:, None, :]
    # Ridge relative to each diagonal entry, so that a loss with a tiny gradient is not
    # regularized more than one with a large gradient; the floor keeps a zero row solvable.
    diag = xp.abs(xp.linalg.diagonal(hess))
    floor = xp.clip(xp.amax(diag, axis=1, keepdims=True), 1e-12, None) * 1e-12
    shift = ridge * (diag + floor)
    identity = eye(t, like=grad)[None]
    matrix = xp.where(pair, hess, 0) + identity * xp.where(free, shift, 1.0)[:, None, :]
    rhs = xp.where(free, -grad, 0)
    if simplex:
        ones = free * xp.ones_like(grad)
        top = xp.concatenate([matrix, ones[:, :, None]], axis=2)
        bottom = xp.concatenate([ones[:, None, :], xp.zeros_like(ones[:, :1, None])], axis=2)
        matrix = xp.concatenate([top, bottom], axis=1)
        rhs = xp.concatenate([rhs, xp.zeros_like(rhs[:, :1])], axis=1)
    solution = solve(matrix, rhs[:, :, None])
    return xp.where(free, solution[:, :t, 0], 0)


def _backtrack(value: Value, v: Array, grad: Array, direction: Array, step: Array) -> Array:
    """The largest of ``step * 2**-k`` meeting the Armijo condition, or 0 if none does.

    All candidates are evaluated at once (no data-dependent loop); 0 means the Newton step no
    longer decreases the objective measurably, i.e. the face minimizer is reached.
    """
    xp = namespace(v)
    k = arange(_BACKTRACK, like=v)
    candidates = step[:, None] * 0.5 ** (k * xp.ones_like(v[:1, :1]))  # (N, K), v's dtype
    points = v[:, None, :] + candidates[:, :, None] * direction[:, None, :]
    slope = xp.sum(grad * direction, axis=1, keepdims=True)
    accepted = value(points) <= value(v)[:, None] + _ARMIJO * candidates * slope
    # First accepted candidate (largest step): argmax of 0/1 gives the first 1.
    first = xp.argmax(accepted * 1, axis=1)
    chosen = xp.sum(xp.where(k[None, :] == first[:, None], candidates, 0), axis=1)
    return xp.where(xp.any(accepted, axis=1), chosen, 0)
