"""Trainer(model, optimizer, losses=spec): the spec's losses, the model's own, one run."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import multiloss as ml
from multiloss.losses import CrossEntropy
from multiloss.spec import Attach, Automatic, Maximize, Scaled, TrainingNet


class SparseTanh(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(x)
        ml.add_loss("sparsity", h.abs().mean(), weight=0.01)
        return h


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 16), SparseTanh())
        self.head = nn.Sequential(nn.Linear(16, 3), nn.LogSoftmax(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def _loader() -> DataLoader:
    x = torch.randn(96, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)


def test_trainer_with_automatic_on_pair_batches() -> None:
    model = Classifier()
    trainer = ml.Trainer(
        model,
        torch.optim.Adam(model.parameters(), lr=0.05),
        losses=Automatic,
        sinks=[],
        log_every=3,
    )
    history = trainer.fit(_loader(), steps=30)
    assert isinstance(trainer.net, TrainingNet)
    assert trainer.net.net is model
    # Named by the path in the model, not in the training net ('net.trunk.1/...').
    assert sorted(history.losses()) == ["output", "trunk.1/sparsity"]
    assert trainer.net.plan is not None
    assert trainer.net.plan[0].rule == "log_probabilities/index"
    losses = history["loss/output"]
    assert losses[-1] < 0.7 * losses[0]
    values = trainer.evaluate(_loader())
    assert set(values) >= {"total", "loss/output", "loss/trunk.1/sparsity"}


def test_trainer_reports_maximized_losses_with_negative_weights() -> None:
    class TwoOutputs(Classifier):
        def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
            log_p = super().forward(x)
            return {"log_p": log_p, "confidence": log_p.exp().max(1).values.mean()}

    model = TwoOutputs()
    spec = [
        Attach("log_p", CrossEntropy(input="log_probabilities"), target="output"),
        Scaled(Maximize("confidence"), 0.5),
    ]
    trainer = ml.Trainer(
        model, torch.optim.Adam(model.parameters(), lr=0.05), losses=spec, sinks=[], log_every=5
    )
    history = trainer.fit(_loader(), steps=30)
    assert history["weight/confidence"][-1] == -0.5
    assert history["loss/confidence"][-1] > history["loss/confidence"][0]
    assert history["loss/log_p"][-1] < history["loss/log_p"][0]
    row = history.last()
    expected_total = sum(row[key] for key in row if key.startswith("weighted/"))
    assert abs(row["total"] - expected_total) < 1e-4


def test_evaluate_before_fit_resolves_the_plan_in_eval_mode() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return torch.softmax(self.fc(x), dim=1)  # seen through the autograd graph

    model = Functional()
    trainer = ml.Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), losses=Automatic, sinks=[]
    )
    trainer.evaluate(_loader())
    assert isinstance(trainer.net, TrainingNet)
    assert trainer.net.plan is not None
    assert trainer.net.plan[0].rule == "probabilities/index"
