"""The gradient-level path: shared update from coefficients, heads from fixed weights."""

from __future__ import annotations

from typing import ClassVar, Literal

import pytest
import torch
from torch import Tensor

from multiloss.balancing import BalanceContext, GradientBalancer, Level
from tests.balancing.properties import Toy, grads

COEFFICIENTS = torch.tensor([2.0, 0.0, 0.5])


class Fixed(GradientBalancer):
    """Returns known coefficients, so the expected gradients can be written by hand."""

    def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
        assert gramian.shape == (3, 3)
        return COEFFICIENTS


class FixedOnHeadsToo(Fixed):
    head_weights: ClassVar[Literal["fixed", "method"]] = "method"


def _reference(model: Toy, weights: dict[str, float], heads_coefficients: Tensor) -> dict:
    """Trunk: sum_i c_i w_i grad L_i; heads: sum_i h_i grad L_i, by plain autograd."""
    model.zero_grad(set_to_none=True)
    losses = model.losses()
    names = sorted(losses)
    trunk = list(model.trunk.parameters())
    heads = list(model.heads.parameters())
    shared_total = sum(COEFFICIENTS[i] * weights[n] * losses[n] for i, n in enumerate(names))
    head_total = sum(heads_coefficients[i] * losses[n] for i, n in enumerate(names))
    for p, g in zip(
        trunk, torch.autograd.grad(shared_total, trunk, retain_graph=True), strict=True
    ):
        p.grad = g
    for p, g in zip(heads, torch.autograd.grad(head_total, heads, allow_unused=True), strict=True):
        p.grad = g
    return grads(model)


@pytest.mark.parametrize("level", ["parameters", "representation"])
def test_shared_update_and_head_gradients_match_a_hand_computation(level: Level) -> None:
    model = Toy()
    weights = {"task0": 1.0, "task1": -2.0, "task2": 0.5}
    model.zero_grad(set_to_none=True)
    used = Fixed(level=level).apply(model.losses(), weights, step=0, representation=model.z)
    got = grads(model)
    fixed = torch.tensor([weights[n] for n in sorted(weights)])
    torch.testing.assert_close(got, _reference(model, weights, fixed))
    torch.testing.assert_close(torch.stack([used[n] for n in sorted(used)]), COEFFICIENTS * fixed)


def test_method_weights_on_heads() -> None:
    model = Toy()
    weights = {"task0": 1.0, "task1": 1.0, "task2": 3.0}
    model.zero_grad(set_to_none=True)
    FixedOnHeadsToo().apply(model.losses(), weights, step=0)
    got = grads(model)
    fixed = torch.tensor([weights[n] for n in sorted(weights)])
    torch.testing.assert_close(got, _reference(model, weights, COEFFICIENTS * fixed))


def test_a_tensor_scale_multiplies_every_gradient() -> None:
    model = Toy()
    model.zero_grad(set_to_none=True)
    Fixed().apply(model.losses(), step=0, scale=torch.tensor(0.25))
    got = grads(model)
    reference = _reference(model, dict.fromkeys(["task0", "task1", "task2"], 1.0), torch.ones(3))
    torch.testing.assert_close(got, {k: 0.25 * v for k, v in reference.items()})


def test_representation_level_needs_a_representation() -> None:
    model = Toy()
    with pytest.raises(ValueError, match="balances at the representation level but no repr"):
        Fixed(level="representation").apply(model.losses(), step=0)
    losses = model.losses()
    with pytest.raises(ValueError, match="does not require grad"):
        Fixed(level="representation").apply(losses, step=0, representation=model.z.detach())


def test_level_is_validated() -> None:
    with pytest.raises(ValueError, match=r"`level` of Fixed must be one of \{'parameters', 're"):
        Fixed(level="layer")  # type: ignore[arg-type]


def test_a_method_without_weigh_or_combine_says_so() -> None:
    class Empty(GradientBalancer):
        pass

    with pytest.raises(NotImplementedError, match="Empty must implement weigh"):
        Empty().apply(Toy().losses(), step=0)


def test_the_jacobian_is_computed_once_and_the_graph_is_freed() -> None:
    model = Toy()
    losses = model.losses()
    Fixed().apply(losses, step=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        losses["task0"].backward()


def test_on_the_cpu_per_loss_gradients_come_from_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop is measurably faster than the vmap-batched pass on a CPU (see _jacobian.py);
    # a regression here once left every CPU balancer on the batched pass.
    import multiloss.balancing.context as context

    seen: list[bool] = []
    real = context.gradients_at

    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(bool(kwargs["batched"]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(context, "gradients_at", spy)
    Fixed().apply(Toy().losses(), step=0)
    assert seen == [False]


def _fresh_balancer_gradients(model: Toy) -> dict[str, Tensor]:
    """The gradients a new balancer (no kept buffers) writes for the model's current batch."""
    model.zero_grad(set_to_none=True)
    Fixed().apply(model.losses(), step=1)
    return grads(model)


def test_buffers_kept_between_steps_never_carry_a_gradient_over() -> None:
    # The same balancer on two different batches gives, on the second, exactly what a fresh
    # balancer gives: the reused Jacobian buffers are fully overwritten.
    model = Toy()
    kept = Fixed()
    model.zero_grad(set_to_none=True)
    kept.apply(model.losses(), step=0)
    model.x = model.x.flip(0) * 3.0 + 1.0
    model.zero_grad(set_to_none=True)
    kept.apply(model.losses(), step=1)
    torch.testing.assert_close(grads(model), _fresh_balancer_gradients(model), rtol=0, atol=0)


def test_release_memory_frees_the_kept_buffers_and_the_next_step_still_works() -> None:
    model = Toy()
    balancer = Fixed()
    balancer.apply(model.losses(), step=0)
    assert "buffers=[]" not in repr(balancer._engine)  # kept after a CPU step
    balancer.release_memory()
    assert "buffers=[]" in repr(balancer._engine)
    model.zero_grad(set_to_none=True)
    balancer.apply(model.losses(), step=1)
    torch.testing.assert_close(grads(model), _fresh_balancer_gradients(model), rtol=0, atol=0)
