"""Optimizer groups: alternating min-max training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.training.groups import select_group


class Game(nn.Module):
    """A toy two-player game: 'disc/*' losses for d, 'gen/*' losses for g."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Linear(2, 2)
        self.d = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = self.g(x)
        real_score = self.d(x).mean()
        fake_score = self.d(fake.detach()).mean()
        return {
            "disc/margin": (fake_score - real_score).pow(2),
            "gen/fool": -self.d(fake).mean(),
        }


def test_groups_step_on_a_cycle_and_only_their_parameters_move() -> None:
    model = Game()
    opt_d = torch.optim.SGD(model.d.parameters(), lr=0.1)
    opt_g = torch.optim.SGD(model.g.parameters(), lr=0.1)
    groups = [
        ml.OptimizerGroup(opt_d, "disc/*", steps=2, name="disc"),
        ml.OptimizerGroup(opt_g, "gen/*", name="gen"),
    ]
    moved: list[str] = []

    class Watch(ml.Hook):
        def before_step(self) -> None:
            self.d = model.d.weight.clone()
            self.g = model.g.weight.clone()

        def after_step(self) -> None:
            changed = []
            if not torch.equal(self.d, model.d.weight):
                changed.append("d")
            if not torch.equal(self.g, model.g.weight):
                changed.append("g")
            moved.append("+".join(changed))

    trainer = ml.Trainer(model, groups, sinks=[], hooks=[Watch()], log_every=3)
    history = trainer.fit([torch.randn(4, 2)] * 6, steps=6)
    assert moved == ["d", "d", "g", "d", "d", "g"]
    assert history.last()["weight/gen/fool"] == 1.0  # the last step was the generator's
    assert "loss/disc/margin" in history.last()  # every loss is reported every step


def test_gradient_diagnostics_with_groups_cover_the_group_that_stepped() -> None:
    # The trainer passed every loss's weight with only the group's losses, and the first log
    # step of any run with groups and grad_diagnostics=True stopped with a ValueError.
    model = Game()
    groups = [
        ml.OptimizerGroup(torch.optim.SGD(model.d.parameters(), lr=0.1), "disc/*", name="disc"),
        ml.OptimizerGroup(torch.optim.SGD(model.g.parameters(), lr=0.1), "gen/*", name="gen"),
    ]
    trainer = ml.Trainer(model, groups, sinks=[], log_every=2, grad_diagnostics=True)
    history = trainer.fit([torch.randn(4, 2)] * 4, steps=4)
    logged = [{key for key in row if key.startswith("grad/")} for row in history]
    gen = {"grad/norm/gen/fool", "grad/share/gen/fool"}
    assert len(logged) == 2
    assert all(keys == gen for keys in logged)  # the log steps (2, 4) are the generator's


def test_select_group_cycle() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    a = ml.OptimizerGroup(opt, "a", steps=3)
    b = ml.OptimizerGroup(opt, "b", steps=1)
    assert [select_group([a, b], s) is a for s in range(8)] == [True] * 3 + [False] + [True] * 3 + [
        False
    ]


def test_group_errors_are_named() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="`optimizer` of OptimizerGroup must be"):
        ml.OptimizerGroup("sgd", "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`steps` of OptimizerGroup must be >= 1; got 0"):
        ml.OptimizerGroup(opt, "a", steps=0)
    with pytest.raises(ValueError, match="`losses` of OptimizerGroup must name at least one"):
        ml.OptimizerGroup(opt, [])
    model = Game()
    groups = [ml.OptimizerGroup(torch.optim.SGD(model.parameters(), lr=0.1), "nothing*")]
    with pytest.raises(ValueError, match=r"group 'group0' selects none of the losses"):
        ml.Trainer(model, groups, sinks=[]).fit([torch.randn(2, 2)], steps=1)
    with pytest.raises(ValueError, match="give each OptimizerGroup its own `scheduler`"):
        ml.Trainer(model, groups, sinks=[], scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))


def test_gan_example_learns_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/gan.py: alternating groups and the reversal variant both move the generator
    onto the data (no sample is near a mode at the start)."""
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples"))
    gan = importlib.import_module("gan")
    _, groups = gan.train(steps=300, disc_steps=2, quiet=True)
    assert groups["start/high_quality"] == 0.0
    assert groups["end/high_quality"] > 0.02
    assert {"loss/disc/real", "loss/disc/fake", "loss/gen/fool"} <= groups.keys()
    _, reversal = gan.train(steps=300, reversal=True, quiet=True)
    assert reversal["end/high_quality"] > 0.01
    assert "loss/gen/fool" not in reversal
