"""torch.compile(fullgraph=True) of models with MoE layers: same losses, same gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import MixtureOfExperts

BALANCE = {"switch": 0.01, "z": 0.001, "global": 0.01, "sequence": 0.01, "bias": 0.001}


class Net(nn.Module):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.inp = nn.Linear(8, 8)
        self.moe = MixtureOfExperts(8, 16, 4, balance=BALANCE)
        self.capped = MixtureOfExperts(8, 16, 4, capacity_factor=1.0, **kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.capped(self.moe(self.inp(x), mask), mask)


def _model(**kwargs: Any) -> Net:
    return Net(**kwargs)


def _fresh_step(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, MixtureOfExperts):
            module.reset_accumulation()


@pytest.mark.slow
def test_inductor_compiled_model_gives_the_same_losses_and_outputs_as_eager() -> None:
    model = _model()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 8)
    with ml.collect(model) as eager:
        expected = model(x)
    _fresh_step(model)
    with ml.collect(model) as book:
        out = compiled(x)
    assert (
        sorted(book)
        == sorted(eager)
        == ["capped/switch", "moe/global", "moe/sequence", "moe/switch", "moe/z"]
    )
    for name in eager:
        torch.testing.assert_close(book[name], eager[name], rtol=1e-5, atol=1e-6)
    assert book.weights == eager.weights
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"gradient_carrier": True}], ids=["losses", "carrier"])
def test_full_graph_forward_and_backward_match_eager(kwargs: dict[str, Any]) -> None:
    # aot_eager traces the whole forward and backward through AOTAutograd: fullgraph=True
    # fails on any data-dependent Python control flow (the structural proof of no host sync),
    # without the minutes that inductor's code generation takes on a small CPU.
    eager_model = _model(**kwargs)
    compiled_model = _model(**kwargs)
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    results = []
    for model, run in ((eager_model, eager_model), (compiled_model, compiled)):
        with ml.collect(model) as book:
            out = run(x, mask)
        loss = out.square().mean()
        if len(book):
            loss = loss + book.total()
        loss.backward()
        model.moe.after_optimizer_step()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((dict(book), out, grads))
    (eager_book, eager_out, eager_grads), (book, out, grads) = results
    assert sorted(book) == sorted(eager_book)
    for name in eager_book:
        torch.testing.assert_close(book[name], eager_book[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(eager_grads) == 8
    for a, b in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # The aux-loss-free bias moved identically from the counts the compiled graph accumulated.
    torch.testing.assert_close(compiled_model.moe.expert_bias, eager_model.moe.expert_bias)
    assert compiled_model.moe.expert_bias.abs().sum() > 0
