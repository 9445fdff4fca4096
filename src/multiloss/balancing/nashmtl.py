"""Nash-MTL (Navon et al., 2022): the Nash bargaining solution between the losses.

Reference: A. Navon, A. Shamsian, I. Achituve, H. Maron, K. Kawaguchi, G. Chechik and
E. Fetaya, "Multi-Task Learning as a Bargaining Game", ICML 2022; official code:
github.com/AvivNavon/nash-mtl ``methods/weight_methods.py`` (``NashMTL``: ``max_norm=1.0``,
``update_weights_every=1``, ``optim_niter=20``, Gram matrix divided by its Frobenius norm,
weights warm-started from the previous step, shared gradient clipped to norm ``max_norm``).

The weights ``alpha > 0`` solve ``G alpha = 1 / alpha`` (elementwise) on the Gram matrix ``G``
of the gradients as they are. The official code divides ``G`` by its Frobenius norm ``N`` for
its solver and puts ``N`` back in the constraint (``-log(alpha_i N) - log((G / N alpha)_i) <=
0``), so its weights solve the equation on ``G`` itself; the update ``J^T alpha`` then has norm
``sqrt(T)`` (``alpha^T G alpha = sum_i alpha_i (G alpha)_i = T``) whatever the gradients'
scale, and ``max_norm`` clips it. It approaches the solution with up to 20 rounds of a
convex-concave procedure, each a cvxpy/ECOS solve.

Here the equation is solved without any external solver. It is invariant to scaling each
gradient (``g_i -> s_i g_i`` gives ``alpha_i -> alpha_i / s_i``), so it is solved on the
cosines ``C = D G D`` (``D = diag(G)^(-1/2)``, unit diagonal), then ``alpha = D beta``: well
scaled whatever the gradients' norms (dividing by ``N`` alone leaves a gradient of norm 1e-3
next to one of 1e3 with a diagonal entry of 1e-12, the size of a ridge, and from ones the
iterations need more than 20 steps). ``C beta = 1 / beta`` is the stationarity condition of
the strictly convex, self-concordant function ``f(beta) = beta^T C beta / 2 - sum(log beta)``,
minimized by damped Newton steps ``beta += d / (1 + lambda)`` (``lambda`` the Newton
decrement), which keep ``beta > 0`` without a line search and converge quadratically once
``lambda < 1/4`` (Nesterov, *Lectures on Convex Optimization*, Sec. 5.2). Without a warm start
they begin at ``beta = 1``, the solution when the gradients are orthogonal (``alpha_i = 1 /
||g_i||``). A ridge of ``1e-12`` (on the unit diagonal) keeps the problem solvable when the
gradients are linearly dependent with a positive combination summing to zero (then no
bargaining solution exists and the official solver fails and keeps its previous weights). A
zero gradient (a loss weighted 0 this step) has no utility to bargain for: it gets weight 0,
and the others the solution without it (the official solver fails there too).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from multiloss._validation import check_finite_float, check_int
from multiloss.balancing._arrays import eye, from_host, namespace, solve, to_host
from multiloss.balancing._linalg import (
    can_read,
    check_gram,
    not_positive_definite,
    on_host,
    pair_entries,
    repair_pair,
    solver_matrix,
    solver_scope,
)
from multiloss.balancing._plan import Level
from multiloss.balancing.context import BalanceContext
from multiloss.balancing.gradient import GradientBalancer

__all__ = ["NashMTL", "nash_weights"]

_RIDGE = 1e-12


def nash_weights(
    gram: Tensor,
    start: Tensor | None = None,
    *,
    max_iter: int = 20,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Solve ``G alpha = 1 / alpha`` (elementwise, ``alpha > 0``), as the official code does.

    The iterations run on the cosines ``C = D G D``, ``D = diag(G)^(-1/2)`` (see the module's
    docstring), whose solution ``beta`` gives ``alpha = D beta``.

    Args:
        gram: ``G = J J^T``, shape (T, T).
        start: Warm start (T,), e.g. the previous step's solution. Default (and for
            non-finite or non-positive entries): ``1 / sqrt(diag G)``, the solution for
            orthogonal gradients.
        max_iter: Newton iteration budget (20, as the official ``optim_niter``).
        tol: Stop once the Newton decrement (the affine-invariant distance to the solution,
            about the relative error of ``alpha``) is below this.

    Returns:
        ``(alpha, iterations)``: weights (T,) in the dtype of ``gram`` (the update before
        clipping is ``J^T alpha``, of norm ``sqrt(T)``), and the Newton iterations used.

    Example:
        >>> import torch
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> gram = g @ g.T
        >>> alpha, _ = nash_weights(gram)
        >>> alpha  # orthogonal gradients: alpha_i = 1 / ||g_i||
        tensor([1.0000, 0.5000])
        >>> (gram @ alpha) * alpha  # G alpha = 1 / alpha
        tensor([1., 1.])
    """
    check_gram(gram, "NashMTL")
    entries = pair_entries(gram)
    if entries is not None:
        return _pair_weights(entries, gram.dtype, start, max_iter, tol)
    host = on_host(gram)  # on the CPU the small solve runs in NumPy (see _linalg.py)
    with solver_scope(gram.device):
        t = gram.shape[0]
        work = solver_matrix(gram, host=host)
        xp = namespace(work)
        work = 0.5 * (work + work.T)
        diagonal = xp.linalg.diagonal(work)
        zero = ~(diagonal > 0)  # a zero gradient: no utility to bargain for, weight 0
        norms = xp.sqrt(xp.where(zero, 1.0, diagonal))  # D^-1
        work = work / (norms[:, None] * norms[None, :])
        identity = eye(t, like=work)
        work = xp.where(zero[:, None] | zero[None, :], identity, work)  # decoupled, beta 1
        work = work + _RIDGE * identity
        # Rounding of a float32 Gram matrix can leave it slightly indefinite: shift by the
        # size of that rounding, but only then (see ``normalize_gram`` for why not always).
        rounding = t * torch.finfo(gram.dtype).eps
        work = work + xp.where(not_positive_definite(work), rounding, 0.0) * identity
        alpha = xp.ones_like(work[0])  # beta, in C's units until the end
        if start is not None:
            guess = (to_host(start) if host else start.to(alpha)) * norms
            alpha = xp.where(xp.isfinite(guess) & (guess > 0), guess, alpha)
        iterations = xp.sum(alpha < 0)  # 0, as a 0-dim integer array of the right kind
        readable = host or can_read(gram)
        for _ in range(max_iter):
            grad = work @ alpha - 1.0 / alpha
            hess = work + xp.diag(1.0 / (alpha * alpha))
            step = solve(hess, -grad)
            decrement = xp.sqrt(xp.clip(-(grad @ step), 0, None))
            going = decrement > tol
            iterations = iterations + going * 1
            # Full steps inside the quadratic-convergence region, damped ones outside it.
            damping = xp.where(decrement < 0.25, 1.0, 1.0 / (1.0 + decrement))
            alpha = xp.where(going, alpha + damping * step, alpha)
            if readable and not bool(going):
                break
        alpha = xp.where(zero, 0.0, alpha / norms)
        return from_host(alpha, gram), torch.as_tensor(iterations, device=gram.device)


def _pair_weights(
    entries: tuple[float, float, float, float],
    dtype: torch.dtype,
    start: Tensor | None,
    max_iter: int,
    tol: float,
) -> tuple[Tensor, Tensor]:
    """:func:`nash_weights` for two losses on the host (``entries``: see :func:`pair_entries`;
    ``dtype``: the Gram matrix's): the same damped Newton iterations on Python floats (the
    2 x 2 Newton system by Cramer's rule)."""
    a, b, c, d = entries
    if not (a > 0 and d > 0):  # a zero gradient gets weight 0, the other 1 / ||g||
        alpha = [1.0 / math.sqrt(a) if a > 0 else 0.0, 1.0 / math.sqrt(d) if d > 0 else 0.0]
        return torch.tensor(alpha, dtype=dtype), torch.tensor(0)
    b = 0.5 * (b + c)
    na, nd = math.sqrt(a), math.sqrt(d)  # D^-1
    a, b, d = a / (na * na), b / (na * nd), d / (nd * nd)
    a, d = repair_pair(a + _RIDGE, b, d + _RIDGE, dtype)
    x, y = 1.0, 1.0  # beta, in C's units until the end
    if start is not None and start.shape == (2,):
        first, second = start.detach().to(torch.float64).tolist()
        x = first * na if math.isfinite(first) and first > 0 else 1.0
        y = second * nd if math.isfinite(second) and second > 0 else 1.0
    iterations = 0
    for _ in range(max_iter):
        gx, gy = a * x + b * y - 1.0 / x, b * x + d * y - 1.0 / y
        hx, hy = a + 1.0 / (x * x), d + 1.0 / (y * y)
        det = hx * hy - b * b
        sx, sy = (-gx * hy + gy * b) / det, (-gy * hx + gx * b) / det
        decrement = math.sqrt(max(-(gx * sx + gy * sy), 0.0))
        if not decrement > tol:
            break
        iterations += 1
        damping = 1.0 if decrement < 0.25 else 1.0 / (1.0 + decrement)
        x, y = x + damping * sx, y + damping * sy
    return torch.tensor([x / na, y / nd], dtype=dtype), torch.tensor(iterations)


class NashMTL(GradientBalancer):
    """Nash-MTL: weights ``alpha > 0`` with ``G alpha = 1 / alpha`` (the Nash bargaining
    solution), then the shared update clipped to norm ``max_norm`` (official default 1.0).

    The weights are warm-started from the previous step (a buffer, saved in ``state_dict``), as
    in the official code, so after the first steps the solver usually needs 1-3 Newton
    iterations; the count of the last call is logged as ``balance/nashmtl/iterations``.

    Args:
        max_norm: Clip the shared update to this norm (in gradient units of the objectives);
            ``0`` disables clipping.
        max_iter: Newton iteration budget per step (official ``optim_niter = 20``).
        tol: Newton stopping threshold on the Newton decrement (about the relative error).
        level: ``"parameters"`` (exact) or ``"representation"`` (cheaper).
        balance: The losses to balance (names or glob patterns); default all.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> def losses():
        ...     return {"a": w @ torch.tensor([0.1, 0.0]), "b": w @ torch.tensor([0.0, 0.2])}
        >>> NashMTL(max_norm=0.0).backward(losses())  # orthogonal: alpha_i = 1 / ||g_i||
        {'a': 10.0, 'b': 5.0}
        >>> w.grad  # equal projections, of norm sqrt(T) whatever the gradients' scale
        tensor([1., 1.])
        >>> w.grad = None
        >>> _ = NashMTL().backward(losses())  # max_norm=1.0 (official): clipped to norm 1
        >>> w.grad
        tensor([0.7071, 0.7071])
    """

    per_loss_state = True

    def __init__(
        self,
        *,
        max_norm: float = 1.0,
        max_iter: int = 20,
        tol: float = 1e-10,
        level: Level = "parameters",
        balance: str | Iterable[str] | None = None,
    ) -> None:
        super().__init__(level=level, balance=balance)
        self.max_norm = check_finite_float(max_norm, "`max_norm` of NashMTL", min_value=0.0)
        self.max_iter = check_int(max_iter, "`max_iter` of NashMTL", min_value=1)
        self.tol = check_finite_float(tol, "`tol` of NashMTL", min_value=0.0, strict_min=True)
        self.alpha: Tensor
        self.iterations: Tensor
        self.setup_known_names()

    def setup_state(self, names: tuple[str, ...], device: torch.device) -> None:
        # 0 until the first step: no warm start (nash_weights then starts at 1 / ||g_i||).
        self.register_buffer("alpha", torch.zeros(len(names), device=device))
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long, device=device))

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        alpha, iterations = nash_weights(gramian, self.alpha, max_iter=self.max_iter, tol=self.tol)
        self.alpha.copy_(alpha)
        self.iterations.copy_(iterations)
        if self.max_norm > 0:
            # clip_grad_norm_ of the official code, from the Gram matrix: ||J^T a||^2 = a^T G a.
            norm = (alpha @ gramian.to(alpha) @ alpha).clamp(min=0).sqrt()
            alpha = alpha * (self.max_norm / (norm + 1e-6)).clamp(max=1.0)
        return alpha

    def state_diagnostics(self) -> dict[str, Tensor | float]:
        return {"iterations": self.iterations} if self._names is not None else {}

    def hyperparameters(self) -> dict[str, object]:
        fields: dict[str, object] = {"max_norm": self.max_norm}
        if self.max_iter != 20:
            fields["max_iter"] = self.max_iter
        return {**fields, **super().hyperparameters()}
