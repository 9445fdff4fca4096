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

from torch import Tensor

from multiloss.balancing._walk import GraphWalk

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
    above = GraphWalk(z, limit=WALK_LIMIT, other_outputs=True)
    for index, loss in enumerate(balanced):
        if not above.run([loss], index):
            return None
    leaves = dict(above.leaves)
    if not leaves:
        return None
    below = GraphWalk(None, limit=WALK_LIMIT, other_outputs=True)  # from z all the way down
    if not below.run([z], 0) or any(key in below.leaves for key in leaves):
        return None
    # The fixed losses run in the final pass: an operation of a head they also read must
    # still have its saved tensors then.
    if fixed and not above.run(list(fixed), len(balanced)):
        return Heads(tuple(leaves.values()), private=False)
    private = all(owner >= 0 for owner in above.owners.values())
    return Heads(tuple(leaves.values()), private=private)
