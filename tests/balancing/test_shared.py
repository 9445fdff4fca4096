"""Shared-parameter discovery: one graph walk classifies every leaf."""

from __future__ import annotations

import torch
from torch import nn

from multiloss.balancing import discover


def _model() -> tuple[nn.Sequential, nn.ModuleList, torch.Tensor]:
    trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4))
    heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(3))
    return trunk, heads, trunk(torch.randn(5, 3))


def test_trunk_is_shared_heads_are_not() -> None:
    trunk, heads, h = _model()
    info = discover([head(h).sum() for head in heads])
    assert {id(p) for p in info.shared} == {id(p) for p in trunk.parameters()}
    assert {id(p) for p in info.others} == {id(p) for p in heads.parameters()}
    assert info.reaches_shared == (True, True, True)
    assert info.reached == (6, 6, 6)  # four trunk tensors + weight and bias of its head


def test_last_shared_layer_is_the_last_linear_weight() -> None:
    trunk, heads, h = _model()
    info = discover([head(h).sum() for head in heads])
    assert len(info.last_shared) == 1
    assert info.last_shared[0] is trunk[2].weight


def test_fixed_losses_never_make_a_leaf_shared() -> None:
    _, heads, h = _model()
    balanced = heads[0](h).sum()
    fixed = heads[1](h).sum()
    info = discover([balanced, fixed], num_balanced=1)
    assert info.shared == ()
    assert len(info.others) == 4 + 2 + 2
    assert info.root_reaches(1, list(heads[1].parameters()))
    assert not info.root_reaches(0, list(heads[1].parameters()))


def test_a_loss_outside_the_trunk_reaches_nothing_shared() -> None:
    _, heads, h = _model()
    loner = nn.Parameter(torch.tensor(2.0))
    info = discover([heads[0](h).sum(), heads[1](h).sum(), loner**2])
    assert info.reaches_shared == (True, True, False)


def test_a_parameter_used_directly_as_a_loss_is_reached() -> None:
    w = nn.Parameter(torch.tensor(1.0))
    info = discover([w, 2 * w])
    assert info.shared == (w,)


def test_losses_without_graph_reach_nothing() -> None:
    info = discover([torch.tensor(1.0), torch.tensor(2.0)])
    assert info.shared == ()
    assert info.others == ()
    assert info.reached == (0, 0)


def test_a_fixed_loss_on_a_trunk_parameter_does_not_move_the_last_shared_layer() -> None:
    # The last shared layer is measured from the balanced losses: an auxiliary penalty on the
    # trunk's bias (a fixed loss, one edge from it) must not make that bias "the last layer".
    trunk, a, b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    h = torch.tanh(trunk(torch.ones(2, 3)))
    roots = [a(h).sum(), b(h).sum(), trunk.bias.pow(2).sum()]
    assert discover(roots, num_balanced=2).last_shared == (trunk.weight,)
