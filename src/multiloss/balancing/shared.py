"""Which parameters do the losses share? One walk of the autograd graph answers it.

A balancer needs to know, for the losses of one step, which leaf tensors (parameters, or inputs
that require grad) each loss reaches: those reached by more than one balanced loss are
*shared* (the trunk a gradient-level method balances), the rest are *task-specific* (they get
the ordinary gradient of the weighted sum).

The walk is one pass over the graph, whatever the number of losses: nodes are visited in
topological order and each carries a bit mask of the losses that reach it (``O(nodes + edges)``,
not ``O(losses x nodes)``). It runs in Python, so callers do it once per step at most and only
when they need it (loss-weighting methods never do, except at the log period).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["GraphInfo", "discover"]


@dataclass(frozen=True)
class GraphInfo:
    """What the losses reach, in a deterministic order (first reached, first listed).

    Attributes:
        shared: Leaves reached by at least two of the first ``num_balanced`` roots.
        others: Every other leaf reached by any root (task-specific parameters, and the
            parameters only the fixed, non-balanced losses reach).
        reaches_shared: Per balanced root, whether it reaches at least one shared leaf.
        reached: Per root, the number of leaves it reaches.
        last_shared: The shared leaves closest to the losses (fewest graph edges away): the
            parameters of the last shared layer. Matrices (``dim >= 2``) within one edge of
            the closest are preferred, so a linear layer gives its weight, not its bias.
        masks: ``id(leaf)`` -> bit mask of the roots that reach it (bit ``i`` = root ``i``).
        accumulators: ``id(leaf)`` -> the leaf's ``AccumulateGrad`` node.
        parents: node -> the ``(parent node, position in its next_functions)`` edges that lead
            into it: how each leaf is used (``_factored.py`` reads it to find linear layers).
    """

    shared: tuple[Tensor, ...]
    others: tuple[Tensor, ...]
    reaches_shared: tuple[bool, ...]
    reached: tuple[int, ...]
    last_shared: tuple[Tensor, ...]
    masks: dict[int, int]
    accumulators: dict[int, Any] = field(default_factory=dict)
    parents: dict[Any, list[tuple[Any, int]]] = field(default_factory=dict)

    def root_reaches(self, index: int, leaves: Sequence[Tensor]) -> bool:
        """Whether root ``index`` reaches at least one of ``leaves``."""
        return any(self.masks.get(id(leaf), 0) >> index & 1 for leaf in leaves)

    def reached_by(self) -> tuple[Tensor, ...]:
        """Every leaf reached by any root (shared first)."""
        return self.shared + self.others


def discover(roots: Sequence[Tensor], num_balanced: int | None = None) -> GraphInfo:
    """Walk the autograd graph of ``roots`` once and classify the leaves they reach.

    Args:
        roots: Scalar losses; the first ``num_balanced`` are balanced, the rest are fixed
            (they count as reaching their leaves but never make a leaf shared).
        num_balanced: How many of ``roots`` are balanced (default: all).

    Example:
        >>> import torch
        >>> trunk, a, b = (torch.nn.Linear(2, 2) for _ in range(3))
        >>> h = trunk(torch.ones(1, 2))
        >>> info = discover([a(h).sum(), b(h).sum()])
        >>> [p.shape for p in info.shared], len(info.others)
        ([torch.Size([2, 2]), torch.Size([2])], 4)
    """
    balanced = len(roots) if num_balanced is None else num_balanced
    balanced_mask = (1 << balanced) - 1
    masks: dict[Any, int] = {}
    depth: dict[Any, int] = {}
    root_leaves: dict[int, int] = {}  # id(leaf tensor used directly as a loss) -> mask
    leaf_tensors: dict[int, Tensor] = {}
    starts: list[Any] = []
    for index, root in enumerate(roots):
        node = root.grad_fn
        if node is None:
            if root.requires_grad:  # the loss is itself a leaf (a parameter used as a loss)
                root_leaves[id(root)] = root_leaves.get(id(root), 0) | (1 << index)
                leaf_tensors[id(root)] = root
            continue
        masks[node] = masks.get(node, 0) | (1 << index)
        if index < balanced:  # distances count from the balanced losses only
            depth[node] = 0
        starts.append(node)

    # Topological order (parents before children): reverse post-order of an iterative DFS.
    # Each node's edges are read once (``next_functions`` builds new tuples at every access)
    # and kept for the second pass.
    order: list[Any] = []
    links: dict[Any, tuple[Any, ...]] = {}
    for start in starts:
        if start in links:
            continue
        links[start] = edges = start.next_functions
        stack = [(start, iter(edges))]
        while stack:
            node, pending = stack[-1]
            for child, _ in pending:
                if child is not None and child not in links:
                    links[child] = edges = child.next_functions
                    stack.append((child, iter(edges)))
                    break
            else:
                stack.pop()
                order.append(node)
    order.reverse()

    leaf_masks: dict[int, int] = dict(root_leaves)
    leaf_depth = {key: 0 for key, mask in root_leaves.items() if mask & balanced_mask}
    accumulators: dict[int, Any] = {}
    parents: dict[Any, list[tuple[Any, int]]] = {}
    for node in order:
        mask = masks.get(node, 0)
        level = depth.get(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):  # an AccumulateGrad node: a leaf is reached
            key = id(variable)
            leaf_tensors.setdefault(key, variable)
            accumulators[key] = node
            leaf_masks[key] = leaf_masks.get(key, 0) | mask
            if level is not None:
                leaf_depth[key] = min(leaf_depth.get(key, level), level)
            continue
        below = None if level is None else level + 1
        for position, (child, _) in enumerate(links[node]):
            if child is None:
                continue
            masks[child] = masks.get(child, 0) | mask
            if below is not None:
                depth[child] = min(depth.get(child, below), below)
            if child in parents:
                parents[child].append((node, position))
            else:
                parents[child] = [(node, position)]

    shared: list[Tensor] = []
    others: list[Tensor] = []
    reaches = [False] * balanced
    reached = [0] * len(roots)
    for key, mask in leaf_masks.items():
        for index in range(len(roots)):
            if mask >> index & 1:
                reached[index] += 1
        if (mask & balanced_mask).bit_count() >= 2:
            shared.append(leaf_tensors[key])
            for index in range(balanced):
                if mask >> index & 1:
                    reaches[index] = True
        else:
            others.append(leaf_tensors[key])
    last: tuple[Tensor, ...] = ()
    if shared:
        # A linear layer's bias sits one edge closer to the loss than its weight (which is
        # reached through a transpose), so look one level beyond the closest leaf.
        closest = min(leaf_depth[id(t)] for t in shared)
        nearest = [t for t in shared if leaf_depth[id(t)] <= closest + 1]
        matrices = [t for t in nearest if t.dim() >= 2]
        last = tuple(matrices or [t for t in nearest if leaf_depth[id(t)] == closest])
    return GraphInfo(
        tuple(shared),
        tuple(others),
        tuple(reaches),
        tuple(reached),
        last,
        leaf_masks,
        accumulators,
        parents,
    )
