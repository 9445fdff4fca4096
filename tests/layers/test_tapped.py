"""Tapped: auxiliary layers on intermediate outputs, while the model object stays untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import ActivationRegularizer, AuxiliaryHead, Tapped


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def test_taps_add_named_losses_and_the_model_computes_what_it_would_alone() -> None:
    net = _net()
    tapped = Tapped(
        net,
        {"1": AuxiliaryHead(nn.Linear(8, 3), target="y"), "3": ActivationRegularizer()},
    )
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with ml.collect(tapped, batch={"x": x, "y": y}) as book:
        out = tapped(x)
    torch.testing.assert_close(out, net(x))
    assert sorted(book) == ["taps.1/cross_entropy", "taps.3/l1"]
    expected = (net[3](net[2](net[1](net[0](x))))).abs().mean()
    torch.testing.assert_close(book["taps.3/l1"], expected)


def test_the_head_gradient_reaches_the_tapped_layers_only() -> None:
    net = _net()
    tapped = Tapped(net, {"1": AuxiliaryHead(nn.Linear(8, 3), target=1)})
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with ml.collect(tapped, batch=(x, y)) as book:
        tapped(x)
    book.total().backward()
    assert net[0].weight.grad is not None
    assert float(net[0].weight.grad.abs().sum()) > 0
    assert net[2].weight.grad is None
    assert net[4].weight.grad is None


def test_the_model_keeps_no_hooks_and_no_head_state() -> None:
    net = _net()
    keys = sorted(net.state_dict())
    tapped = Tapped(net, {"2": AuxiliaryHead(nn.Linear(8, 3), target=1)})
    x = torch.randn(2, 4)
    with ml.collect(tapped, batch=(x, torch.tensor([0, 1]))):
        tapped(x)
    assert tapped.net is net
    assert all(not module._forward_hooks for module in net.modules())
    assert sorted(net.state_dict()) == keys
    assert sorted(tapped.state_dict()) == sorted(
        [f"net.{key}" for key in keys] + ["taps.2.head.weight", "taps.2.head.bias"]
    )


def test_hooks_are_removed_when_the_forward_fails() -> None:
    net = _net()
    tapped = Tapped(net, {"0": AuxiliaryHead(nn.Linear(8, 3), target="missing")})
    with pytest.raises(ValueError, match="no key 'missing'"), ml.collect(tapped, batch={}):
        tapped(torch.randn(2, 4))
    assert not net[0]._forward_hooks


def test_the_model_alone_never_runs_the_taps() -> None:
    net = _net()
    Tapped(net, {"1": ActivationRegularizer()})
    with ml.collect(net) as book:
        net(torch.randn(2, 4))
    assert len(book) == 0


def test_an_empty_path_taps_the_model_output() -> None:
    net = _net()
    tapped = Tapped(net, {"": AuxiliaryHead(nn.Identity(), target=1)})
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with ml.collect(tapped, batch=(x, y)) as book:
        tapped(x)
    assert list(book) == ["taps.output/cross_entropy"]
    torch.testing.assert_close(
        book["taps.output/cross_entropy"], nn.functional.cross_entropy(net(x), y)
    )


def test_unknown_path_lists_the_submodules() -> None:
    with pytest.raises(ValueError, match=r"names '7', which is no submodule .* '0', '1', '2'"):
        Tapped(_net(), {"7": ActivationRegularizer()})


def test_paths_that_collide_after_renaming_are_an_error() -> None:
    net = nn.Module()
    net.a_b = nn.Linear(2, 2)
    net.a = nn.Module()
    net.a.b = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"'a_b' and 'a.b' .* both map to the tap name 'a_b'"):
        Tapped(net, {"a_b": ActivationRegularizer(), "a.b": ActivationRegularizer()})


@pytest.mark.parametrize(
    ("net", "taps", "error", "match"),
    [
        ("net", {"0": nn.ReLU()}, TypeError, r"`net` of Tapped must be an nn.Module"),
        (None, {}, ValueError, r"`taps` of Tapped must be a non-empty mapping"),
        (None, {"0": "relu"}, TypeError, r"the tap at '0' of Tapped must be an nn.Module"),
        (None, {0: nn.ReLU()}, TypeError, r"each path in `taps` of Tapped must be a str"),
    ],
)
def test_bad_arguments_are_named(net: object, taps: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Tapped(_net() if net is None else net, taps)  # type: ignore[arg-type]


def test_repr_lists_the_tapped_paths() -> None:
    assert "taps='1', '3'" in repr(
        Tapped(_net(), {"1": ActivationRegularizer(), "3": ActivationRegularizer()})
    )
