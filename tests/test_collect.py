"""The ambient collector: naming, weights, duplicates, validation, leaks, compilation."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import multiloss as ml

collect_module = importlib.import_module("multiloss.collect")  # the module, not the class


class Leaf(nn.Module):
    def __init__(self, name: str = "reg", accumulate: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.loss_name = name
        self.accumulate = accumulate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        ml.add_loss(self.loss_name, h.pow(2).mean(), accumulate=self.accumulate)
        ml.record("mean", h.mean())
        return h


class Encoder(nn.Module):
    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Leaf() for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x)
        ml.add_loss("top", out.mean().abs(), weight=0.5)
        return out


def test_add_loss_returns_value_unchanged_inside_and_outside() -> None:
    value = torch.tensor(2.0)
    assert ml.add_loss("x", value) is value
    with ml.collect():
        assert ml.add_loss("x", value) is value


def test_outside_a_collector_nothing_is_recorded_and_nothing_leaks() -> None:
    model = Model()
    model(torch.randn(2, 3))  # no collector: emissions vanish
    with ml.collect() as book:
        pass
    assert len(book) == 0
    assert not collect_module._PENDING


@pytest.mark.parametrize("root", [True, False])
def test_names_are_module_paths(root: bool) -> None:
    model = Model()
    with ml.collect(model if root else None) as book:
        model(torch.randn(2, 3))
    assert sorted(book) == [
        "encoder.blocks.0/reg",
        "encoder.blocks.1/reg",
        "encoder.blocks.2/reg",
        "top",
    ]
    assert book.origins["encoder.blocks.1/reg"] == "encoder.blocks.1"
    assert book.origins["top"] == ""
    assert set(book.metrics) == {f"encoder.blocks.{i}/mean" for i in range(3)}


def test_names_ignore_ddp_and_compile_wrappers() -> None:
    model = Model()
    with ml.collect(torch.compile(model)) as book:
        model(torch.randn(2, 3))
    assert "encoder.blocks.0/reg" in book


def test_a_submodule_called_module_keeps_its_name() -> None:
    outer = nn.Module()
    outer.module = Leaf()  # not a DDP wrapper: the name must stay
    with ml.collect(outer) as book:
        outer.module(torch.randn(2, 3))
    assert "module/reg" in book


def test_total_is_weighted_sum_and_weights_are_kept() -> None:
    model = Model()
    with ml.collect(model) as book:
        model(torch.randn(4, 3))
    expected = sum(book.weights[name] * book[name] for name in book)
    torch.testing.assert_close(book.total(), expected)
    assert book.weights["top"] == 0.5
    weighted = book.weighted()
    torch.testing.assert_close(weighted["top"], 0.5 * book["top"])


def test_total_gradients_flow_to_every_emitter() -> None:
    model = Model()
    with ml.collect(model) as book:
        model(torch.randn(4, 3))
    book.total().backward()
    for block in model.encoder.blocks:
        assert block.lin.weight.grad is not None
        assert block.lin.weight.grad.abs().sum() > 0


def test_empty_book_total_is_a_clear_error() -> None:
    with ml.collect() as book:
        pass
    with pytest.raises(ValueError, match="LossBook is empty"):
        book.total()


def test_duplicate_name_names_both_emitters() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = Leaf("same")
            self.b = nn.Sequential(Leaf("same"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ml.add_loss("dup", x.sum())
            self.a(x)
            return self.b(x)

    model = Twice()
    with pytest.raises(ValueError, match=r"'dup' was emitted twice.*root model.*code outside"):
        with ml.collect(model):
            model(torch.ones(1, 3))
            ml.add_loss("dup", torch.tensor(1.0))


def test_same_module_called_twice_errors_unless_accumulate() -> None:
    leaf = Leaf()
    model = nn.Sequential(leaf, leaf)
    with pytest.raises(ValueError, match=r"'0/reg' was emitted twice.*module '0'.*module '0'"):
        with ml.collect(model):
            model(torch.ones(1, 3))
    leaf.accumulate = True
    x = torch.ones(1, 3)
    with ml.collect(model) as book:
        model(x)
    first = leaf.lin(x)
    expected = first.pow(2).mean() + leaf.lin(first).pow(2).mean()
    torch.testing.assert_close(book["0/reg"], expected)


def test_accumulate_with_different_weights_is_an_error() -> None:
    with pytest.raises(ValueError, match="different weights"), ml.collect():
        ml.add_loss("a", torch.tensor(1.0), accumulate=True)
        ml.add_loss("a", torch.tensor(1.0), accumulate=True, weight=2.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "", "value": torch.tensor(1.0)}, ValueError, "`name` must be a non-empty"),
        ({"name": 3, "value": torch.tensor(1.0)}, TypeError, "`name` must be a non-empty string"),
        ({"name": " x", "value": torch.tensor(1.0)}, ValueError, "leading or trailing"),
        ({"name": "x", "value": 1.0}, TypeError, "loss 'x'.*must be a scalar torch.Tensor"),
        ({"name": "x", "value": torch.ones(2)}, ValueError, r"loss 'x'.*got shape \(2,\)"),
        ({"name": "x", "value": torch.tensor(1)}, TypeError, "floating-point.*torch.int64"),
        (
            {"name": "x", "value": torch.tensor(1.0), "weight": float("nan")},
            ValueError,
            "`weight` for loss 'x' must be a finite float; got nan",
        ),
        (
            {"name": "x", "value": torch.tensor(1.0), "weight": "1"},
            TypeError,
            "`weight` for loss 'x' must be a finite float",
        ),
        (
            {"name": "x", "value": torch.tensor(1.0), "weight": True},
            TypeError,
            "`weight` for loss 'x' must be a finite float",
        ),
    ],
)
def test_bad_emissions_are_named(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match), ml.collect():
        ml.add_loss(**kwargs)


def test_one_element_tensor_is_accepted_as_scalar() -> None:
    with ml.collect() as book:
        ml.add_loss("x", torch.ones(1, 1))
    assert book["x"].shape == ()


def test_loss_on_another_device_is_an_error() -> None:
    with pytest.raises(ValueError, match="must be on device meta; got a tensor on cpu"):
        with ml.collect(device="meta"):
            ml.add_loss("x", torch.tensor(1.0))


def test_record_validates_and_averages_repeats() -> None:
    with ml.collect() as book:
        ml.record("t", 1.0)
        ml.record("t", torch.tensor(3.0))
    assert float(book.metrics["t"]) == 2.0
    with pytest.raises(ValueError, match="metric 'bad' must be a scalar"), ml.collect():
        ml.record("bad", torch.ones(3))
    with pytest.raises(TypeError, match="metric 'bad' must be a number"), ml.collect():
        ml.record("bad", "high")  # type: ignore[arg-type]


def test_nested_collectors_are_independent() -> None:
    with ml.collect() as outer:
        ml.add_loss("a", torch.tensor(1.0))
        with ml.collect() as inner:
            ml.add_loss("b", torch.tensor(2.0))
        ml.add_loss("c", torch.tensor(3.0))
    assert sorted(outer) == ["a", "c"]
    assert sorted(inner) == ["b"]
    assert ml.current_book() is None


def test_exception_inside_collector_restores_state() -> None:
    with pytest.raises(RuntimeError, match="boom"), ml.collect():
        raise RuntimeError("boom")
    assert ml.current_book() is None
    assert collect_module._OPEN[0] == 0


def test_set_weight_and_add() -> None:
    with ml.collect() as book:
        pass
    book.add("returned", torch.tensor(2.0), weight=3.0)
    assert float(book.total()) == 6.0
    book.set_weight("returned", 0.5)
    assert float(book.total()) == 1.0
    with pytest.raises(KeyError, match="no loss named 'nope'"):
        book.set_weight("nope", 1.0)
    assert "returned=0.5*2" in repr(book)


def test_compiled_model_with_explicit_module_keeps_path_names() -> None:
    class CLeaf(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(x)
            ml.add_loss("reg", h.pow(2).mean(), module=self)
            return h

    model = nn.Sequential(CLeaf(), CLeaf())
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3)
    with ml.collect(model) as eager:
        model(x)
    with ml.collect(model) as book:
        compiled(x)
    assert sorted(book) == ["0/reg", "1/reg"]
    for name in book:
        torch.testing.assert_close(book[name], eager[name])
    compiled(x)  # outside a collector compiled code queues nothing
    assert not collect_module._PENDING


def test_compiled_duplicate_without_module_hints_at_module_self() -> None:
    model = nn.Sequential(Leaf(), Leaf())
    compiled = torch.compile(model, fullgraph=True)
    with pytest.raises(ValueError, match="pass module=self"), ml.collect(model):
        compiled(torch.randn(2, 3))


def test_add_loss_arguments_are_checked() -> None:
    net = nn.Linear(2, 2)
    value = torch.tensor(1.0)
    with ml.collect(net):
        with pytest.raises(
            TypeError,
            match=r"`module` of add_loss for loss 'a' must be the emitting nn.Module "
            r"\(usually self\) or None; got 'lin' \(str\)",
        ):
            ml.add_loss("a", value, module="lin")  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match=r"`accumulate` of add_loss for loss 'a' must be a bool; got 'yes'"
        ):
            ml.add_loss("a", value, accumulate="yes")  # type: ignore[arg-type]
        stranger = nn.Linear(1, 1)
        with pytest.warns(
            UserWarning,
            match=r"`module` of add_loss for loss 'b' is a Linear that is not part "
            r"of the collector's model \(Linear\)",
        ):
            ml.add_loss("b", value, module=stranger)
