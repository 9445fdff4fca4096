"""Short training runs: Maximize goes up while the minimized loss goes down; .net survives."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import multiloss as ml
from multiloss.losses import CrossEntropy
from multiloss.spec import Attach, Automatic, Maximize, Scaled, attach


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.classify = nn.Linear(16, 3)
        self.explore = nn.Sequential(nn.Linear(16, 5), nn.Softmax(dim=-1))
        with torch.no_grad():  # start peaked (low entropy) so there is room to go up
            self.explore[0].weight.mul_(10.0)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {"logits": self.classify(h), "policy": self.explore(h)}


def entropy(p: Tensor) -> Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()


def _problem() -> dict[str, Tensor]:
    x = torch.randn(64, 4)
    return {"input": x, "logits": (x[:, 0] > 0).long() + (x[:, 1] > 0).long()}


def _train(net: nn.Module, batch: dict[str, Tensor], steps: int) -> list[dict[str, float]]:
    """A plain loop doing what the trainer does: collect, add the spec's losses, step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.03)
    history = []
    for step in range(steps):
        with ml.collect(net, step=step, batch=batch) as book:
            out = net(batch)
        for name, value in out.items():
            book.add(name, value, weight=out.weights[name])
        optimizer.zero_grad()
        book.total().backward()
        optimizer.step()
        history.append({name: float(value.detach()) for name, value in out.items()})
        history[-1].update({f"weight/{name}": w for name, w in out.weights.items()})
    return history


def test_maximized_goes_up_while_minimized_goes_down() -> None:
    model, batch = TwoHeads(), _problem()
    spec = [Attach("logits", CrossEntropy()), Maximize(Attach("policy", entropy))]
    history = _train(attach(model, spec), batch, steps=40)
    first, last = history[0], history[-1]
    assert last["logits"] < 0.6 * first["logits"]
    most = math.log(5.0)  # the entropy of a uniform choice among 5
    assert first["policy"] < 0.8 * most
    assert last["policy"] > first["policy"] + 0.2
    assert last["policy"] <= most + 1e-6
    assert all(row["weight/policy"] == -1.0 and row["policy"] > 0 for row in history)


def test_without_maximize_the_entropy_goes_down() -> None:
    # The control: minimizing the same term lowers it, so the sign is what Maximize changed.
    model, batch = TwoHeads(), _problem()
    spec = [Attach("logits", CrossEntropy()), Attach("policy", entropy)]
    history = _train(attach(model, spec), batch, steps=40)
    assert history[-1]["policy"] < history[0]["policy"] - 0.05


def test_scheduled_weight_follows_the_step() -> None:
    model, batch = TwoHeads(), _problem()
    spec = [Automatic("logits"), Scaled(Attach("policy", entropy), ml.schedules.LinearWarmup(10))]
    history = _train(attach(model, spec), batch, steps=12)
    weights = [row["weight/policy"] for row in history]
    assert weights[:3] == [0.0, 0.1, 0.2]
    assert weights[-1] == 1.0


def test_net_is_the_same_trained_model_after_training() -> None:
    model, batch = TwoHeads(), _problem()
    parameters = list(model.parameters())
    before = {key: value.clone() for key, value in model.state_dict().items()}
    net = attach(model, [Automatic("logits"), Maximize(Attach("policy", entropy))])
    _train(net, batch, steps=5)
    assert net.net is model
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert model.state_dict().keys() == before.keys()
    assert any(not torch.equal(model.state_dict()[key], before[key]) for key in before)
    with torch.no_grad():
        out = model(batch["input"])  # inference needs no training net
    assert set(out) == {"logits", "policy"}
