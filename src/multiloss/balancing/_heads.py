"""The parameters above the representation: what the per-loss passes at ``z`` can also take.

At the representation level the per-loss backward passes run from each loss down to ``z``,
through its head, and then the final pass ran through every head again (the balanced losses'
ordinary gradient for the heads, and the method's update into the trunk through ``z``). When
the balanced losses reach the trunk only through ``z``, the per-loss passes can take the heads'
gradients on their way, as the parameter level does (``_Session.take_others``), and the final
pass only has to send the update into the trunk from ``z``: each head is run backward once, not
twice. With heads of a few layers that is most of what the representation level added.

The condition is checked on the graph, edge by edge: the leaves the balanced losses reach
without passing through ``z`` (:func:`heads_above`; another output of the operation that made
``z`` is not ``z``) must not be reachable from ``z`` too, or the per-loss passes would carry the
trunk's share of such a tied weight and the final pass would add it again. When, moreover, no
operation above ``z`` is shared by two losses (balanced or fixed), every per-loss pass may free
the part of the graph it ran: the heads' saved activations are released during the call, not
when the caller drops its loss tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["Heads", "heads_above"]

#: Nodes walked before giving up (the heads are small; a trunk of thousands of nodes is walked
#: once per step only where the heads are not single linear layers, see ``context``).
WALK_LIMIT = 20_000


@dataclass(frozen=True)
class Heads:
    """What :func:`heads_above` found.

    Attributes:
        leaves: The leaves above ``z`` (the heads' parameters), in order of discovery.
        private: No operation above ``z`` is reached by two losses (balanced or fixed): each
            per-loss pass may free what it ran.
    """

    leaves: tuple[Tensor, ...]
    private: bool


class _Walk:
    """Walks from roots down to (and not through) one edge, recording leaves and owners."""

    def __init__(self, stop: tuple[Any, int] | None) -> None:
        self.stop = stop
        self.leaves: dict[int, Tensor] = {}
        self.owner: dict[Any, int] = {}  # operation -> the one walk that reached it, or -1
        self.nodes = 0

    def run(self, roots: Sequence[Tensor], owner: int) -> bool:
        """Walk from ``roots`` as ``owner``; ``False`` past :data:`WALK_LIMIT`."""
        seen: set[Any] = set()
        stack: list[Any] = []
        for root in roots:
            if root.grad_fn is not None:
                stack.append(root.grad_fn)
            elif root.requires_grad:  # a loss that is itself a leaf
                self.leaves.setdefault(id(root), root)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            self.nodes += 1
            if self.nodes > WALK_LIMIT:
                return False
            variable = getattr(node, "variable", None)
            if isinstance(variable, Tensor):  # an AccumulateGrad node: a leaf, nothing saved
                self.leaves.setdefault(id(variable), variable)
                continue
            known = self.owner.setdefault(node, owner)
            if known != owner:
                self.owner[node] = -1
            for child, output in node.next_functions:
                if child is None or (child, output) == self.stop:
                    continue
                stack.append(child)
        return True


def heads_above(balanced: Sequence[Tensor], fixed: Sequence[Tensor], z: Tensor) -> Heads | None:
    """The leaves above ``z`` if the balanced losses reach the trunk only through ``z``.

    ``None`` when they do not (a leaf above ``z`` is also below it: a tied weight, a loss that
    reads the trunk around ``z``, another output of the operation that made ``z``), when ``z``
    is a leaf, or when the graph is too large to walk.

    Example:
        >>> import torch
        >>> trunk, heads = torch.nn.Linear(3, 4), [torch.nn.Linear(4, 1) for _ in range(2)]
        >>> z = trunk(torch.ones(2, 3))
        >>> found = heads_above([head(z).sum() for head in heads], [], z)
        >>> len(found.leaves), found.private  # two weights, two biases; no shared operation
        (4, True)
        >>> heads_above([heads[0](z).sum(), trunk.weight.sum()], [], z) is None  # around z
        True
    """
    if z.grad_fn is None:
        return None
    above = _Walk((z.grad_fn, z.output_nr))
    for index, loss in enumerate(balanced):
        if not above.run([loss], index):
            return None
    leaves = dict(above.leaves)
    if not leaves:
        return None
    below = _Walk(None)
    if not below.run([z], 0) or any(key in below.leaves for key in leaves):
        return None
    # The fixed losses run in the final pass: an operation of a head they also read must
    # still have its saved tensors then.
    if fixed and not above.run(list(fixed), len(balanced)):
        return Heads(tuple(leaves.values()), private=False)
    private = all(owner >= 0 for owner in above.owner.values())
    return Heads(tuple(leaves.values()), private=private)
