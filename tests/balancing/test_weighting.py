"""Loss-weighting methods with parameters of their own: the gradient written in closed form."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from multiloss.balancing import GradNorm, LossWeighting, Uncertainty
from tests.balancing.properties import Toy

LEARNED: dict[str, tuple[Callable[[], LossWeighting], str]] = {
    "Uncertainty": (lambda: Uncertainty(classification=["task0"]), "log_vars"),
    "GradNorm(representation)": (lambda: GradNorm(layer="representation"), "weights"),
    "GradNorm(last layer)": (lambda: GradNorm(), "weights"),
}


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("scale", [1.0, 0.25, torch.tensor(0.5)], ids=["1", "0.25", "tensor"])
def test_a_gradient_written_in_closed_form_is_the_one_autograd_writes(
    name: str, scale: float | torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two micro-batches at a gradient scale: the method's own parameter gets, accumulated, the
    # gradient autograd gives it when a hook watches the parameter (the hook must see it, so
    # that route builds the term and differentiates it).
    make, attribute = LEARNED[name]
    routes: list[bool] = []
    real = LossWeighting._writes_gradient_itself
    monkeypatch.setattr(
        LossWeighting,
        "_writes_gradient_itself",
        lambda self, ctx, parameter: routes.append(real(self, ctx, parameter)) or routes[-1],
    )

    def run(hooked: bool) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = Toy()
        balancer = make()
        balancer.apply(model.losses(), step=0, representation=model.z)  # state set up, L(0)
        balancer.after_optimizer_step()
        parameter = getattr(balancer, attribute)
        parameter.grad = None
        seen: list[torch.Tensor] = []
        if hooked:
            parameter.register_hook(lambda grad: seen.append(grad.clone()) or grad)
        routes.clear()
        for micro in range(2):
            model.x = model.x + 0.1 * micro  # another micro-batch
            balancer.apply(model.losses(), step=1, scale=scale, representation=model.z)
        assert routes == [not hooked] * 2
        assert len(seen) == (2 if hooked else 0)
        return parameter.grad.clone(), model.trunk[0].weight.grad.clone()  # type: ignore[union-attr]

    closed, autograd = run(hooked=False), run(hooked=True)
    assert closed[0].abs().sum() > 0
    torch.testing.assert_close(closed, autograd, rtol=1e-5, atol=1e-6)
