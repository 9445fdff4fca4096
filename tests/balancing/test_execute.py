"""The one backward pass of a loss-weighting plan: the weighted sum's gradient, without the sum.

``_execute._weighted_roots`` seeds the stacked losses with ``scale * weights`` instead of
building ``scale * sum_i w_i L_i``; these check that the gradients are the sum's, in every
case the sum handled, and that the seed never becomes memory something else keeps.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multiloss.balancing import Static, Sum, Uncertainty
from tests.balancing.properties import Toy


def _reference(
    losses: dict[str, torch.Tensor],
    weights: dict[str, float],
    scale: float | torch.Tensor,
    parameters: list[torch.Tensor],
) -> list[torch.Tensor]:
    total = sum(weights.get(name, 1.0) * loss for name, loss in losses.items())
    grads = torch.autograd.grad(total * scale, parameters, retain_graph=True)  # type: ignore[union-attr]
    return list(grads)


@pytest.mark.parametrize("scale", [1.0, 0.25, torch.tensor(4.0)], ids=["1", "0.25", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, "mixed"])
def test_the_seeded_pass_gives_the_weighted_sums_gradient(
    scale: float | torch.Tensor, dtype: torch.dtype | str
) -> None:
    # Balanced losses with negative (maximized) and fractional weights, a fixed loss, a
    # constant loss: every parameter gets what autograd gives the explicit weighted sum.
    torch.manual_seed(0)
    model = Toy()
    losses = model.losses()
    if dtype == "mixed":
        losses["task1"] = losses["task1"].to(torch.bfloat16)
    elif isinstance(dtype, torch.dtype):
        losses = {name: loss.to(dtype) for name, loss in losses.items()}
    losses["reg"] = sum(p.pow(2).sum() for p in model.trunk.parameters()).to(losses["task0"].dtype)  # type: ignore[union-attr]
    losses["constant"] = torch.tensor(3.0)
    weights = {"task0": 0.5, "task1": -0.25, "task2": 2.0, "reg": 0.1}
    parameters = list(model.parameters())
    expected = _reference(losses, weights, scale, parameters)
    balancer = Static({"task0": 1.0}, balance=["task*", "constant"])
    balancer.apply(losses, weights, step=0, scale=scale)
    exact = dtype == torch.float32
    for parameter, want in zip(parameters, expected, strict=True):
        assert parameter.grad is not None
        torch.testing.assert_close(
            parameter.grad,
            want,
            rtol=1e-6 if exact else 2e-2,
            atol=1e-6 if exact else 1e-2,
        )


def test_one_tensor_given_as_two_losses_counts_twice() -> None:
    w = nn.Parameter(torch.tensor(2.0))
    loss = w**2
    Sum().apply({"a": loss, "b": loss}, {"a": 1.0, "b": 3.0}, step=0)
    assert float(w.grad) == pytest.approx(4.0 * 4.0)  # type: ignore[arg-type]


def test_no_loss_with_a_graph_writes_nothing() -> None:
    used = Sum().apply({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, step=0)
    assert used == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


@pytest.mark.parametrize("make", [Sum, Uncertainty], ids=["Sum", "Uncertainty"])
def test_a_gradient_never_shares_memory_with_the_weights(make: type) -> None:
    # A loss that is a view of a parameter hands its seed straight to that parameter's
    # accumulation, which keeps an incoming gradient as .grad rather than copy it. The seed is
    # a tensor of its own, so zeroing .grad in place (zero_grad(set_to_none=False)) changes
    # neither the weights reported nor Sum's cached fixed weights.
    p = nn.Parameter(torch.tensor([2.0]))
    q = nn.Parameter(torch.tensor([5.0]))
    balancer = make()
    for step in range(3):
        losses = {"a": p.view(()), "b": q.view(()) * 1.0}
        used = balancer.apply(losses, step=step)
        reported = {name: float(weight) for name, weight in used.items()}
        assert p.grad is not None
        assert q.grad is not None
        assert float(p.grad) == pytest.approx(reported["a"])
        p.grad.zero_()
        q.grad.zero_()
        assert {name: float(weight) for name, weight in used.items()} == reported
        balancer.after_optimizer_step()
    assert reported["a"] > 0
