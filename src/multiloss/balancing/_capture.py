"""Per-loss gradient norms at the representation, read from the ordinary backward pass.

A loss-weighting method that needs ``||dL_i/dz||`` (GradNorm with ``layer="representation"``)
would otherwise pay one more backward pass through every head before the real one. But the real
backward pass already computes each loss's gradient at ``z``, just before adding them up: the
operation that reads ``z`` on loss ``i``'s side (the first layer of head ``i``) hands ``z`` that
loss's share. When each such operation belongs to one balanced loss only (heads on a shared
trunk, the common case), a hook on it (``Node.register_hook``, which sees the gradients the node
computed for its inputs) reads ``c_i * scale * dL_i/dz`` as it passes, where ``c_i`` is the
loss's weight in the backward pass; dividing by ``|c_i * scale|`` gives the norm. The hooks sit on
the graph only during that backward pass, and each keeps the squared norm, not the gradient.

Where an operation reading ``z`` is shared by two losses (a joint head), or also reached by a
fixed loss, the shares cannot be told apart: :func:`find_capture` returns ``None`` and the
method takes the per-loss gradients the ordinary way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from multiloss.balancing._arrays import float32_tensor
from multiloss.balancing._jacobian import is_unit_scale
from multiloss.balancing._walk import edges_into

__all__ = ["NormCapture", "find_capture"]


class NormCapture:
    """Reads each balanced loss's gradient norm at ``z`` from the ordinary backward pass.

    Built by :func:`find_capture`; :meth:`armed` holds the hooks for the backward pass, then
    :meth:`norms` gives ``||dL_i/dz||`` per balanced loss (0 for a loss that does not reach
    ``z``, or whose weight in the backward pass was 0).
    """

    def __init__(self, rows: int, nodes: dict[Any, list[tuple[int, int]]]) -> None:
        self.rows = rows
        self._nodes = nodes  # node -> [(operand position, owning row)]
        # The squared norm of each gradient read, by row: one operation per read.
        self._parts: list[list[Tensor]] = [[] for _ in range(rows)]
        self._pending: dict[int, list[Tensor]] = {}  # rows read at several edges: summed first
        self._norms: Tensor | None = None
        self._floats: list[float] | None = None  # the norms, where finished on the host
        self._multi = {
            row
            for row in range(rows)
            if sum(r == row for uses in nodes.values() for _, r in uses) > 1
        }

    def _hook(self, uses: list[tuple[int, int]]) -> Any:
        def read(grad_inputs: tuple[Tensor | None, ...], _: tuple[Tensor | None, ...]) -> None:
            for position, row in uses:
                grad = grad_inputs[position]
                if grad is None:
                    continue
                if row in self._multi:
                    self._pending.setdefault(row, []).append(grad.detach())
                else:  # the usual case: no copy of the gradient is kept
                    self._parts[row].append(_square(grad))

        return read

    @contextmanager
    def armed(self, coefficients: Tensor, scale: float | Tensor) -> Iterator[None]:
        """Hooks on the graph for the enclosed backward pass, in which loss ``i`` enters with
        weight ``coefficients[i] * scale``; the norms are ready on exit."""
        handles = [node.register_hook(self._hook(uses)) for node, uses in self._nodes.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        self._finish(coefficients, scale)

    def _finish(self, coefficients: Tensor, scale: float | Tensor) -> None:
        # No grad mode to enter: the gradients read carry no graph (no create_graph).
        for row, grads in self._pending.items():
            total = grads[0]
            for grad in grads[1:]:
                total = total + grad
            self._parts[row].append(_square(total))
        self._pending.clear()
        device = coefficients.device
        if _on_host(device, scale):
            factor = abs(float(scale))
            norms = []
            for parts, coefficient in zip(self._parts, coefficients.tolist(), strict=True):
                weight = abs(coefficient) * factor
                square = sum(float(part) for part in parts)
                norms.append(math.sqrt(square) / weight if weight > 0 else 0.0)
            self._floats = norms
            return
        zero = torch.zeros((), dtype=torch.float32, device=device)
        squares = torch.stack(
            [sum((part.to(torch.float32) for part in parts), zero) for parts in self._parts]
        )
        weights = coefficients.detach().to(torch.float32).abs()
        if not is_unit_scale(scale):
            weights = weights * (scale.abs() if isinstance(scale, Tensor) else abs(scale))
        # A weight of 0 let nothing through to read: that row's norm reads 0.
        safe = torch.where(weights > 0, weights, torch.ones_like(weights))
        self._norms = torch.where(weights > 0, squares.sqrt() / safe, zero)

    def norms(self) -> Tensor:
        """``(T,)`` float32 norms of the raw losses' gradients at ``z``."""
        if self._norms is None:
            if self._floats is None:
                raise RuntimeError(
                    "the gradient norms at the representation are read during the backward "
                    "pass; they were asked for before it ran"
                )
            self._norms = float32_tensor(self._floats)
        return self._norms

    def norm_floats(self) -> list[float]:
        """:meth:`norms` as Python floats (read for free where they were finished on the
        host, the CPU; read back from the device otherwise)."""
        if self._floats is None:
            self._floats = self.norms().tolist()
        return self._floats


def _on_host(device: torch.device, scale: float | Tensor) -> bool:
    """Whether the norms are finished on Python floats: a few numbers on the CPU are read for
    free, and cheaper than the dozen tensor operations of the general code."""
    return device.type == "cpu" and not (isinstance(scale, Tensor) and scale.device != device)


def _square(grad: Tensor) -> Tensor:
    """``||grad||^2`` in one operation: a BLAS dot product in float32 and float64 (cheaper
    than ``vector_norm``); half precision accumulated in float32 (``vector_norm`` with a wider
    dtype, then squared)."""
    grad = grad.detach()
    if grad.dtype in (torch.float32, torch.float64) and grad.is_contiguous():
        flat = grad.view(-1)
        return torch.dot(flat, flat)
    low = grad.dtype in (torch.float16, torch.bfloat16)
    norm: Tensor = torch.linalg.vector_norm(grad, dtype=torch.float32 if low else None)
    return norm.square()


def find_capture(
    balanced: Sequence[Tensor],
    fixed: Sequence[Tensor],
    z: Tensor,
    names: Sequence[str] | None = None,
) -> NormCapture | None:
    """A :class:`NormCapture` for ``balanced`` at ``z``, or ``None`` if some operation reading
    ``z`` is shared by two balanced losses, or by a balanced and a fixed one (the shares
    cannot be told apart), or the graph cannot be walked.

    ``names``: the balanced losses' names, for the error below.

    Raises:
        ValueError: A balanced loss is not computed from ``z`` (its norm would read 0): ``z``
            is not upstream of the losses, e.g. an output of the same compiled graph.
    """
    rows = len(balanced)
    edges = edges_into(list(balanced) + list(fixed), z, grouped_from=rows)
    if edges is None:
        return None
    nodes: dict[Any, list[tuple[int, int]]] = {}
    for (node, position), owner in edges.items():
        if owner is None:
            return None
        if owner < rows:
            nodes.setdefault(node, []).append((position, owner))
    owned = {row for uses in nodes.values() for _, row in uses}
    missing = [row for row in range(rows) if row not in owned and balanced[row].requires_grad]
    if missing:
        which = "no balanced loss is" if not owned else "some balanced losses are not"
        listed = [names[row] for row in missing] if names is not None else missing
        raise ValueError(
            f"the gradient norms at the representation are asked for, but {which} computed "
            f"from the representation (shape {tuple(z.shape)}): the graph of {listed} never "
            "passes through it, e.g. because the representation is an output of the same "
            "compiled graph as the losses. Mark a tensor every balanced loss is computed from "
            "(multiloss.mark_representation), leave the others out of `balance=`, or measure "
            "on the parameters (GradNorm's layer='last')"
        )
    return NormCapture(rows, nodes)
