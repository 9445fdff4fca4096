"""Walks of the autograd graph from the losses down to the representation ``z``.

Three questions about the graph above ``z``: which operations read ``z`` and for which loss
(GradNorm's norms read during the backward pass, ``_capture``; heads kept factored,
``_factored``), which leaves the losses reach without passing through ``z``, and whether any
operation there serves two losses (the heads' gradients from the per-loss passes, ``_heads``).
Each walk records who reached what: an operation or edge reached by two owners is marked
shared. The first question runs every step and needs neither leaves nor owners of operations,
so :func:`edges_into` walks on its own, leaner loop; :class:`GraphWalk` answers the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["READERS_LIMIT", "Edges", "GraphWalk", "edges_into"]

#: Nodes walked by :func:`edges_into` before giving up (a loss that reaches the trunk around
#: ``z`` would otherwise send the walk through the whole trunk).
READERS_LIMIT = 2000

#: ``(node, operand position)`` of each edge into ``z`` -> the one owner that reaches it, or
#: ``None`` when several do; in order of discovery.
Edges = dict[tuple[Any, int], "int | None"]


class GraphWalk:
    """Walks from roots down to ``z``, owner by owner, recording what each reached.

    Args:
        z: The representation; its own edge is never walked through (``None``: walk all the
            way down).
        limit: Nodes walked in all before :meth:`run` gives up.
        other_outputs: Walk on into the operation that made ``z`` when it is reached through
            another of its outputs (``chunk``, an LSTM's ``h_n``): needed to see every leaf
            below; not needed to find what reads ``z``.

    Attributes:
        edges: Every edge into ``z`` and its owner (``None``: shared).
        leaves: The leaves reached, by ``id``, in order of discovery (a root that is itself a
            leaf included).
        owners: Every operation reached (``AccumulateGrad`` nodes aside) and its owner, or -1
            when several owners reached it.
    """

    def __init__(self, z: Tensor | None, *, limit: int, other_outputs: bool) -> None:
        self.node = None if z is None else z.grad_fn
        self.slot = -1 if z is None else z.output_nr
        self.limit = limit
        self.other_outputs = other_outputs
        self.edges: Edges = {}
        self.leaves: dict[int, Tensor] = {}
        self.owners: dict[Any, int] = {}
        self.visited = 0

    def run(self, roots: Sequence[Tensor], owner: int) -> bool:
        """Walk from ``roots`` (one visited set) as ``owner``; ``False`` past the limit."""
        seen: set[Any] = set()
        stack: list[Any] = []
        for root in roots:
            if root.grad_fn is not None:
                stack.append(root.grad_fn)
            elif root.requires_grad:  # a loss that is itself a leaf
                self.leaves.setdefault(id(root), root)
        while stack:
            current = stack.pop()
            if current in seen or (current is self.node and not self.other_outputs):
                continue
            seen.add(current)
            self.visited += 1
            if self.visited > self.limit:
                return False
            variable = getattr(current, "variable", None)
            if isinstance(variable, Tensor):  # an AccumulateGrad node: a leaf, nothing saved
                self.leaves.setdefault(id(variable), variable)
                continue
            if self.owners.setdefault(current, owner) != owner:
                self.owners[current] = -1
            for position, (child, output) in enumerate(current.next_functions):
                if child is None:
                    continue
                if child is self.node:
                    if output == self.slot:
                        key = (current, position)
                        if self.edges.setdefault(key, owner) != owner:
                            self.edges[key] = None
                        continue
                    if not self.other_outputs:
                        continue
                stack.append(child)
        return True


def edges_into(
    roots: Sequence[Tensor],
    z: Tensor,
    *,
    grouped_from: int | None = None,
    limit: int = READERS_LIMIT,
) -> Edges | None:
    """Every edge of the roots' graph that enters ``z``, with the root that owns it.

    Each root's graph is walked on its own (the walk stops at ``z``), so an operation reading
    ``z`` for one root only records that root's index. Roots from ``grouped_from`` on count as
    one owner (index ``grouped_from``) and share one walk: fixed losses, one per block of a
    deep trunk, would otherwise each walk the trunk below them again. ``None`` if ``z`` is not
    produced by an operation, or the walk passes ``limit`` nodes.
    """
    node = z.grad_fn
    if node is None:
        return None
    slot = z.output_nr
    edges: Edges = {}
    budget = limit
    count = len(roots) if grouped_from is None else grouped_from
    groups = [[root] for root in roots[:count]]
    if roots[count:]:
        groups.append(list(roots[count:]))
    for owner, group in enumerate(groups):
        budget = _walk_edges(group, node, slot, owner, edges, budget)
        if budget < 0:
            return None
    return edges


def _walk_edges(
    roots: Sequence[Tensor], node: Any, slot: int, owner: int, edges: Edges, budget: int
) -> int:
    """One owner's walk for :func:`edges_into`: records the edges into ``(node, slot)``;
    returns the budget left (negative: past the limit). :class:`GraphWalk` without what this
    question does not need (leaves, owners of operations): the walk runs every step for
    GradNorm's norms at ``z`` and the factored heads, where :class:`GraphWalk` took 10 to 45 us
    of the step (T = 2 to 8 on the benchmark trunk; this loop 7 to 30 us)."""
    seen: set[Any] = set()
    stack = [root.grad_fn for root in roots if root.grad_fn is not None]
    while stack:
        current = stack.pop()
        if current in seen or current is node:
            continue
        seen.add(current)
        budget -= 1
        if budget < 0:
            return budget
        # An AccumulateGrad node (a leaf) has no next functions: nothing to skip.
        for position, (child, output) in enumerate(current.next_functions):
            if child is node:
                if output == slot:
                    key = (current, position)
                    if edges.setdefault(key, owner) != owner:
                        edges[key] = None
            elif child is not None:
                stack.append(child)
    return budget
