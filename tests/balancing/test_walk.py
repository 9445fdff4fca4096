"""The walk from the losses down to the representation (``_walk``)."""

from __future__ import annotations

import torch
from torch import nn

from multiloss.balancing._walk import GraphWalk, edges_into


def test_edges_into_z_and_their_owners() -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Linear(3, 4), [nn.Linear(4, 1) for _ in range(2)]
    z = trunk(torch.randn(5, 3))
    joint = nn.Linear(4, 2)(z)  # one operation read for two losses
    losses = [heads[0](z).sum(), heads[1](z).sum(), joint[:, 0].sum(), joint[:, 1].sum()]
    edges = edges_into(losses, z)
    assert edges is not None
    assert sorted(owner for owner in edges.values() if owner is not None) == [0, 1]
    assert list(edges.values()).count(None) == 1  # the joint head
    # Grouped roots (the fixed losses) are one owner: their shared read is not a conflict.
    grouped = edges_into(losses, z, grouped_from=2)
    assert grouped is not None
    assert sorted(grouped.values()) == [0, 1, 2]  # type: ignore[type-var]
    assert edges_into(losses, z, limit=3) is None  # past the limit
    assert edges_into(losses, z.detach()) is None  # z made by no operation


def _chunked() -> tuple[nn.Linear, torch.Tensor, torch.Tensor, nn.Linear, nn.Parameter]:
    """A trunk whose output is chunked into ``z`` and ``side``, a head for ``z``, and a
    parameter used as a loss on its own."""
    torch.manual_seed(0)
    trunk = nn.Linear(3, 4)
    z, side = trunk(torch.randn(5, 3)).chunk(2, dim=1)
    return trunk, z, side, nn.Linear(2, 1), nn.Parameter(torch.tensor(1.0))


def test_edges_into_one_output_of_an_operation() -> None:
    # z is one output of chunk: reads of its sibling are not edges into z, and the walk never
    # goes below the operation that made z (a trunk of 2000 nodes would pass any limit).
    _, z, side, head, p = _chunked()
    roots = [head(z).sum() + side.sum(), side.mean(), p, z.sum()]
    edges = edges_into(roots, z, limit=12)
    assert edges is not None
    assert sorted(edges.values()) == [0, 3]  # type: ignore[type-var]
    kinds = {type(node).__name__: position for node, position in edges}
    assert kinds == {"AddmmBackward0": 1, "SumBackward0": 0}  # addmm(bias, z, W^T)
    # A root that is z's own operation (z used as a loss through its sibling) adds nothing.
    assert edges_into([side.sum(), z], z) == {}


def test_leaves_owners_and_other_outputs() -> None:
    trunk, z, side, head, p = _chunked()
    out = head(z)
    roots = [out.sum() + side.sum(), out.mean(), p]
    # Stopping at the operation that made z: the trunk is never reached.
    walk = GraphWalk(z, limit=100, other_outputs=False)
    assert all(walk.run([root], k) for k, root in enumerate(roots))
    assert {id(t) for t in walk.leaves.values()} == {id(head.weight), id(head.bias), id(p)}
    assert -1 in walk.owners.values()  # the head's operation serves roots 0 and 1
    # Through another output of that operation (side), the trunk is reached.
    through = GraphWalk(z, limit=100, other_outputs=True)
    assert through.run(roots[:1], 0)
    assert id(trunk.weight) in through.leaves
    assert GraphWalk(None, limit=100, other_outputs=True).run([z], 0)
