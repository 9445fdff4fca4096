from __future__ import annotations

import torch
from torch import nn

from multiloss.spec.producers import ProducerTrace

from .toys import MultiHead


def test_innermost_module_wins_and_identity_passes_through() -> None:
    softmax = nn.Softmax(dim=-1)
    model = nn.Sequential(nn.Linear(3, 2), softmax, nn.Identity())
    with ProducerTrace(model) as trace:
        out = model(torch.zeros(1, 3))
    found = trace.producer_of(out)
    assert found is not None
    assert found.module is softmax
    assert found.path == "1"


def test_dict_values_map_to_their_heads() -> None:
    model = MultiHead()
    with ProducerTrace(model) as trace:
        out = model(torch.randn(2, 4))
    assert trace.producer_of(out["probs"]).path == "softmax_head.1"  # type: ignore[union-attr]
    assert trace.producer_of(out["logits"]).path == "logits_head"  # type: ignore[union-attr]
    assert trace.producer_of(out["distance"]).path == "distance"  # type: ignore[union-attr]


def test_values_made_in_the_root_forward_belong_to_the_root() -> None:
    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return {"doubled": self.fc(x) * 2}

    model = Root()
    with ProducerTrace(model) as trace:
        out = model(torch.zeros(1, 2))
    found = trace.producer_of(out["doubled"])
    assert found is not None
    assert found.module is model
    assert found.describe().startswith("the model itself (Root")


def test_hooks_are_removed_and_unknown_values_have_no_producer() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with ProducerTrace(model) as trace:
        model(torch.zeros(1, 3))
    assert all(not m._forward_hooks for m in model.modules())
    assert trace.producer_of(torch.zeros(1)) is None
    trace.clear()


def test_hooks_are_removed_when_the_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    try:
        with ProducerTrace(model):
            model(torch.zeros(1, 5))
    except RuntimeError:
        pass
    assert all(not m._forward_hooks for m in model.modules())
