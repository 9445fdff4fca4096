"""The case type of the shared balancer tests, and the small multi-task problem they run on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import multiloss as ml
from multiloss.balancing import Balancer


@dataclass
class BalancerCase:
    """One balancer configuration to check.

    Attributes:
        id: Test id.
        make: Builds a fresh balancer; must accept ``balance=`` (and pass ``kwargs``).
        nonnegative: The method promises multipliers >= 0 of the fixed weights (so a loss
            keeps the sign of its fixed weight).
        reduces_to_sum: With one balanced loss the update is exactly Sum's.
        representation: Needs the marked representation.
        learnable: Has parameters that an optimizer must step.
        kwargs: Keyword arguments always passed to ``make``.
    """

    id: str
    make: Callable[..., Balancer]
    nonnegative: bool = True
    reduces_to_sum: bool = True
    representation: bool = False
    learnable: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> Balancer:
        return self.make(**{**self.kwargs, **overrides})


class Toy(nn.Module):
    """A shared trunk and one linear head per task; losses are positive MSEs of very different
    scales (targets 1x, 10x, 100x), so every method has something to balance."""

    def __init__(self, tasks: int = 3, dim: int = 6, hidden: int = 8) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(tasks))
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(16, dim, generator=generator)
        self.y = torch.randn(16, tasks, generator=generator) * torch.tensor(
            [10.0**k for k in range(tasks)]
        )

    def losses(self, names: list[str] | None = None) -> dict[str, Tensor]:
        z = ml.mark_representation(self.trunk(self.x))
        self.z = z
        out = {
            f"task{i}": (head(z).squeeze(1) - self.y[:, i]).pow(2).mean()
            for i, head in enumerate(self.heads)
        }
        return out if names is None else {name: out[name] for name in names}


class Wide(nn.Module):
    """A narrow input layer (its weight stays a dense block), a wide one (factored: batch 4
    is below its width), four linear heads of different target scales on the 32-wide
    representation ``z`` (factored at the representation level: 4 outputs < 32 features)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(4))
        self.x = torch.randn(4, 3)
        self.y = torch.randn(4, 4) * torch.tensor([1.0, 3.0, 10.0, 0.3])

    def losses(self) -> dict[str, Tensor]:
        z = self.trunk(self.x)
        self.z = z
        return {
            f"t{i}": (head(z).squeeze(1) - self.y[:, i]).pow(2).mean()
            for i, head in enumerate(self.heads)
        }


def grads(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter's gradient (zeros where None), cloned."""
    return {
        name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in model.named_parameters()
    }


def run(
    balancer: Balancer,
    model: Toy,
    *,
    weights: Mapping[str, float] | None = None,
    names: list[str] | None = None,
    reverse: bool = False,
    step: int = 0,
    scale: float = 1.0,
    seed: int = 0,
    diagnostics: bool = False,
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """One apply() on fresh gradients: the weights used (as floats) and the gradients."""
    model.zero_grad(set_to_none=True)
    losses = model.losses(names)
    if reverse:
        losses = dict(reversed(list(losses.items())))
    torch.manual_seed(seed)
    used = balancer.apply(
        losses,
        weights,
        step=step,
        scale=scale,
        representation=model.z,
        diagnostics=diagnostics,
    )
    balancer.check()
    return {k: float(v) for k, v in used.items()}, grads(model)


def train(balancer: Balancer, model: Toy, steps: int, lr: float = 1e-3) -> None:
    """A few optimizer steps, the way the trainer drives a balancer."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        losses = model.losses()
        balancer.apply(losses, step=step, representation=model.z)
        balancer.add_parameters_to(optimizer)  # per-loss parameters exist after the first call
        optimizer.step()
        balancer.after_optimizer_step()


def assert_grads_close(a: Mapping[str, Tensor], b: Mapping[str, Tensor], **tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=lambda m, k=key: f"{k}: {m}", **tol)
