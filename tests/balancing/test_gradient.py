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


@pytest.fixture
def copied_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy every per-loss gradient into the engine's buffers (up to four rows are otherwise
    kept as autograd returns them, and no buffer is used)."""
    import multiloss.balancing.context as context_module

    monkeypatch.setattr(context_module, "_KEEP_ROWS_UP_TO", 0)


@pytest.mark.usefixtures("copied_rows")
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


@pytest.mark.usefixtures("copied_rows")
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


# -- the heads' gradients from the per-loss passes (_Session.take_others) -------------------------
def _count_heads_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the backward passes restricted to the other parameters (``inputs=``)."""
    import multiloss.balancing._execute as execute_module

    calls: list[int] = []
    real = torch.autograd.backward

    def counted(*args: object, **kwargs: object) -> None:
        if kwargs.get("inputs") is not None:
            calls.append(1)
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(execute_module.torch.autograd, "backward", counted)
    return calls


def _heads_by_their_own_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiloss.balancing.context as context

    monkeypatch.setattr(context._Session, "take_others", lambda self: ())


CASES = {
    "plain": {},
    "fixed loss on the trunk": {"fixed": "trunk"},
    "fixed loss on a head only": {"fixed": "head"},
    "diagnostics": {"fixed": "trunk", "diagnostics": True},
    "tensor scale": {"scale": torch.tensor(0.25)},
    "head weights of the method": {"method": True},
}


def _run(model: Toy, case: dict, accumulate: bool = False) -> dict:
    balancer = FixedOnHeadsToo() if case.get("method") else Fixed()
    weights = {"task0": 1.0, "task1": -2.0, "task2": 0.5}
    model.zero_grad(set_to_none=True)
    for _ in range(2 if accumulate else 1):
        losses = model.losses()
        if case.get("fixed") == "trunk":
            losses["reg"] = model.trunk[0].weight.pow(2).sum() + model.heads[1].bias.pow(2).sum()
            weights["reg"] = 0.3
        elif case.get("fixed") == "head":
            losses["reg"] = model.heads[2].weight.pow(2).sum()
            weights["reg"] = 0.3
        if "reg" in losses:
            balancer = type(balancer)(balance=["task*"])
        balancer.apply(
            losses,
            weights,
            step=0,
            scale=case.get("scale", 1.0),
            diagnostics=case.get("diagnostics", False),
        )
    return grads(model)


@pytest.mark.parametrize("case", sorted(CASES))
def test_heads_from_the_per_loss_passes_equal_their_own_backward_pass(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Toy()
    for accumulate in (False, True):  # .grad written fresh, then added to
        with monkeypatch.context() as patch:
            passes = _count_heads_passes(patch)
            folded = _run(model, CASES[case], accumulate)
            # A fixed loss that reaches no shared parameter needs its own backward pass.
            expected_passes = 2 if accumulate else 1
            assert len(passes) == (expected_passes if case == "fixed loss on a head only" else 0)
        with monkeypatch.context() as patch:
            _heads_by_their_own_pass(patch)
            separate = _run(model, CASES[case], accumulate)
        torch.testing.assert_close(folded, separate)


def test_the_per_loss_passes_free_the_graph_when_they_give_the_heads_their_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passes = _count_heads_passes(monkeypatch)
    model = Toy()
    losses = model.losses()
    Fixed().apply(losses, step=0)
    assert passes == []  # no backward pass of the heads' own
    for loss in losses.values():  # and the graph of every loss is gone
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss.backward()


def test_a_hooked_head_or_a_method_that_may_need_the_graph_keeps_the_heads_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Combining(Fixed):  # overrides combine(): it may ask for another Jacobian
        def combine(self, jacobian, ctx):  # type: ignore[no-untyped-def]
            ctx.jacobian_of(ctx.shared_parameters()[:1])
            return super().combine(jacobian, ctx)

    passes = _count_heads_passes(monkeypatch)
    model = Toy()
    Combining().apply(model.losses(), step=0)
    assert len(passes) == 1
    Fixed(level="representation").apply(model.losses(), step=0, representation=model.z)
    assert len(passes) == 1  # the representation level has its single backward pass anyway
    seen: list[Tensor] = []
    model.heads[0].weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad))
    model.zero_grad(set_to_none=True)
    Fixed().apply(model.losses(), step=0)
    assert len(passes) == 2
    assert len(seen) == 1  # the hook saw the gradient written by autograd
    hooked = Toy()
    hooked.heads[1].bias.register_hook(lambda g: 2 * g)
    Fixed().apply(hooked.losses(), step=0)
    assert len(passes) == 3


def test_heads_gradients_from_the_per_loss_passes_are_laid_out_like_the_heads() -> None:
    # Heads whose weight's gradient comes back transposed from autograd (an elementwise
    # product before the transpose): .grad gets the parameter's strides, as autograd's own
    # accumulation would give it.
    torch.manual_seed(0)
    trunk = torch.nn.Linear(6, 8)
    weights = [torch.nn.Parameter(torch.randn(3, 8)) for _ in range(2)]
    z = trunk(torch.randn(3, 6)).t()  # (8, 3)
    losses = {f"task{i}": ((2.0 * w).t() * z).pow(2).mean() for i, w in enumerate(weights)}

    class Half(GradientBalancer):
        def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
            return torch.full((gramian.shape[0],), 0.5)

    expected = [
        torch.autograd.grad(losses[f"task{i}"], w, retain_graph=True)[0]
        for i, w in enumerate(weights)
    ]
    Half().apply(losses, step=0)
    for w, reference in zip(weights, expected, strict=True):
        assert w.grad is not None
        assert w.grad.stride() == w.stride()
        torch.testing.assert_close(w.grad, reference)


@pytest.mark.parametrize("keep", [True, False])
def test_a_shared_weight_whose_gradient_comes_back_transposed_gets_its_own_layout(
    keep: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``einsum`` with the weight as ``(out, in)`` returns its gradient transposed. Kept as a
    # row, the update would keep those strides: .grad must be laid out like the parameter
    # (``view(-1)`` works, as after autograd's own accumulation), with the same values.
    import multiloss.balancing.context as context_module

    monkeypatch.setattr(context_module, "_KEEP_ROWS_UP_TO", 4 if keep else 0)
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 4))
    heads = [torch.nn.Parameter(torch.randn(6)) for _ in range(2)]
    z = torch.einsum("bnd,hd->bnh", torch.randn(2, 5, 4), weight).tanh()
    losses = {f"t{i}": (z @ head).pow(2).mean() for i, head in enumerate(heads)}
    rows = [torch.autograd.grad(loss, weight, retain_graph=True)[0] for loss in losses.values()]
    assert rows[0].stride() != weight.stride()  # the case this test is about

    class Half(GradientBalancer):
        def weigh(self, gramian: Tensor, ctx: BalanceContext) -> Tensor:
            return torch.full((gramian.shape[0],), 0.5)

    Half().apply(losses, step=0)
    assert weight.grad is not None
    assert weight.grad.stride() == weight.stride()
    torch.testing.assert_close(weight.grad, 0.5 * (rows[0] + rows[1]))
