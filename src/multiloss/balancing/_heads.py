"""The parameters above the representation: what the per-loss passes at ``z`` can also take.

At the representation level the per-loss backward passes run from each loss down to ``z``,
through its head, and then the final pass ran through every head again (the balanced losses'
ordinary gradient for the heads, and the method's update into the trunk through ``z``). When
the balanced losses reach the trunk only through ``z``, the per-loss passes can take the heads'
gradients on their way, as the parameter level does (``_Session.take_others``), and the final
pass only has to send the update into the trunk from ``z``: each head is run backward once, not
twice. With heads of a few layers that is most of what the representation level added.

The condition is checked on the graph: the leaves the balanced losses reach without passing
``z`` (:func:`leaves_above`) must not be reachable from ``z`` too (:func:`leaves_below`), or
the per-loss passes would carry the trunk's share of such a tied weight, and the final pass
would add it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["heads_above", "leaves_above", "leaves_below"]

#: Nodes walked before giving up (the heads are small; a trunk of thousands of nodes is walked
#: once per step only where the heads are not single linear layers, see ``context``).
WALK_LIMIT = 20_000


def _leaves(starts: Sequence[Any], stop: Any) -> dict[int, Tensor] | None:
    """The leaves reached from ``starts`` without passing ``stop``, by ``id`` in order of
    discovery; ``None`` past :data:`WALK_LIMIT` nodes."""
    found: dict[int, Tensor] = {}
    seen: set[Any] = set()
    stack = [node for node in starts if node is not None]
    while stack:
        node = stack.pop()
        if node in seen or node is stop:
            continue
        seen.add(node)
        if len(seen) > WALK_LIMIT:
            return None
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):  # an AccumulateGrad node: a leaf
            found.setdefault(id(variable), variable)
            continue
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return found


def leaves_above(roots: Sequence[Tensor], z: Tensor) -> dict[int, Tensor] | None:
    """The leaves the roots reach without passing through ``z``."""
    return _leaves([root.grad_fn for root in roots], z.grad_fn)


def leaves_below(z: Tensor) -> dict[int, Tensor] | None:
    """The leaves ``z`` is computed from."""
    return _leaves([z.grad_fn], None)


def heads_above(roots: Sequence[Tensor], z: Tensor) -> tuple[Tensor, ...]:
    """The leaves above ``z`` if the roots reach the trunk only through ``z``, else ``()``.

    Example:
        >>> import torch
        >>> trunk, heads = torch.nn.Linear(3, 4), [torch.nn.Linear(4, 1) for _ in range(2)]
        >>> z = trunk(torch.ones(2, 3))
        >>> len(heads_above([head(z).sum() for head in heads], z))  # two weights, two biases
        4
        >>> heads_above([heads[0](z).sum(), trunk.weight.sum()], z)  # around z: ()
        ()
    """
    if z.grad_fn is None:
        return ()
    above = leaves_above(roots, z)
    if not above:
        return ()
    below = leaves_below(z)
    if below is None or any(key in below for key in above):
        return ()
    return tuple(above.values())
