"""Per-loss gradients: batched equals a naive loop; the Jacobian's algebra is exact."""

from __future__ import annotations

import copy as copy_module
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.balancing import Jacobian, per_loss_gradients
from multiloss.balancing._jacobian import Engine, Target, gradients_at


def _problem() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    w1 = torch.randn(4, 3, requires_grad=True)
    w2 = torch.randn(4, requires_grad=True)
    h = torch.tanh(torch.randn(6, 3) @ w1.T + w2)
    losses = [h.pow(2).mean(), (h * torch.arange(4.0)).sum(), h.abs().mean(), w2.sum()]
    return losses, [w1, w2]


def _naive(losses: list[torch.Tensor], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    rows = [
        torch.autograd.grad(
            loss, inputs, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        for loss in losses
    ]
    return [torch.stack([row[k] for row in rows]) for k in range(len(inputs))]


def test_batched_pass_equals_one_backward_per_loss() -> None:
    losses, inputs = _problem()
    expected = _naive(losses, inputs)
    blocks, batch_ok = per_loss_gradients(losses, inputs, retain_graph=False, grad_scale=3.0)
    assert batch_ok
    for block, ref in zip(blocks, expected, strict=True):
        torch.testing.assert_close(block, 3.0 * ref)


def test_loop_fallback_equals_the_batched_pass() -> None:
    losses, inputs = _problem()
    batched, _ = per_loss_gradients(losses, inputs, retain_graph=True)
    looped, batch_ok = per_loss_gradients(losses, inputs, retain_graph=False, batched=False)
    assert not batch_ok
    for a, b in zip(batched, looped, strict=True):
        torch.testing.assert_close(a, b)


class _NoBatching(torch.autograd.Function):
    """An op whose backward reads a value on the host: vmap cannot batch it."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * (2.0 if grad.sum().item() != 12345 else 0.0)


def test_an_op_without_a_batching_rule_falls_back_with_a_warning() -> None:
    w = torch.ones(3, requires_grad=True)
    h = _NoBatching.apply(w)
    losses = [h.sum(), (h**2).sum()]
    with pytest.warns(RuntimeWarning, match="falling back to one backward pass per loss"):
        blocks, batch_ok = per_loss_gradients(losses, [w], retain_graph=False)
    assert not batch_ok
    torch.testing.assert_close(blocks[0], torch.stack([torch.full((3,), 2.0), 8.0 * w.detach()]))


def test_unused_inputs_get_zero_rows() -> None:
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    blocks, _ = per_loss_gradients([a.sum(), (2 * a).sum()], [a, b], retain_graph=False)
    torch.testing.assert_close(blocks[1], torch.zeros(2, 3))


def test_the_rows_that_reach_no_target_are_reported() -> None:
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    outputs = [a.sum(), b.sum(), (2 * a).sum() + b.sum(), torch.tensor(1.0)]
    unused: list[int] = []
    blocks, _ = gradients_at(
        outputs, [Target.of(a)], retain_graph=True, batched=False, unused=unused
    )
    assert unused == [1, 3]  # b's sum never reaches a; the constant has no graph
    torch.testing.assert_close(blocks[0][1], torch.zeros(2))
    # One pass when each target has a single owner: rows owning no reached target.
    owned = [Target(a, a.shape, a.dtype, a.device, owner=0)]
    unused = []
    gradients_at(outputs[:2], owned, retain_graph=True, batched=False, unused=unused)
    assert unused == [1]


def test_no_output_with_a_graph_gives_zeros() -> None:
    b = torch.ones(3, requires_grad=True)
    blocks, _ = per_loss_gradients([torch.tensor(1.0)], [b], retain_graph=False)
    torch.testing.assert_close(blocks[0], torch.zeros(1, 3))


def test_empty_arguments_are_an_error() -> None:
    with pytest.raises(ValueError, match="at least one output and one input; got 0 outputs"):
        per_loss_gradients([], [torch.ones(1)], retain_graph=False)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 4),
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    seed=st.integers(0, 1000),
)
def test_gramian_combine_and_dot_match_the_dense_matrix(
    rows: int, sizes: list[int], seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(rows, size, 2, generator=generator) for size in sizes]
    factors = torch.rand(rows, generator=generator) + 0.5
    jac = Jacobian(blocks).scaled(factors)
    dense = torch.cat([b.reshape(rows, -1) for b in blocks], dim=1) * factors[:, None]
    torch.testing.assert_close(jac.matrix(), dense)
    torch.testing.assert_close(jac.gramian(), dense @ dense.T)
    torch.testing.assert_close(jac.norms(), dense.norm(dim=1))
    coefficients = torch.randn(rows, generator=generator)
    combined = torch.cat([part.reshape(-1) for part in jac.combine(coefficients)])
    torch.testing.assert_close(combined, coefficients @ dense)
    update = [torch.randn(size, 2, generator=generator) for size in sizes]
    flat = torch.cat([u.reshape(-1) for u in update])
    torch.testing.assert_close(jac.dot(update), dense @ flat)
    first = jac.take(slice(0, 1))
    torch.testing.assert_close(first.gramian(), (dense[:1] @ dense[:1].T))
    last = jac.take([rows - 1])
    torch.testing.assert_close(last.matrix(), dense[rows - 1 :])


def test_empty_jacobian_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        Jacobian([])


# -- Engine: what a balancer remembers between calls ----------------------------------------------
def test_loop_fills_the_given_buffers_in_place() -> None:
    losses, inputs = _problem()
    expected = _naive(losses, inputs)
    out = [torch.full((len(losses), *t.shape), float("nan")) for t in inputs]
    blocks, _ = per_loss_gradients(losses, inputs, retain_graph=False, batched=False, out=out)
    for block, buffer, ref in zip(blocks, out, expected, strict=True):
        assert block is buffer
        torch.testing.assert_close(block, ref)


def test_engine_keeps_one_set_of_cpu_buffers_per_shape() -> None:
    engine = Engine()
    w, b = torch.zeros(4, 3), torch.zeros(4)
    first = engine.buffers(2, [w, b])
    assert first is not None
    assert [tuple(t.shape) for t in first] == [(2, 4, 3), (2, 4)]
    again = engine.buffers(2, [w, b])
    assert again is not None
    assert all(x is y for x, y in zip(first, again, strict=True))
    other = engine.buffers(3, [w, b])  # another row count: a new set replaces the old one
    assert other is not None
    assert other[0].shape == (3, 4, 3)
    assert engine.buffers(2, [w, b])[0] is not first[0]  # type: ignore[index]
    engine.clear()
    assert "buffers=[]" in repr(engine)


def test_engine_keeps_no_buffers_off_the_cpu() -> None:
    # Accelerators recycle memory through their caching allocator; held buffers would only
    # take room from the next forward pass.
    assert Engine().buffers(2, [torch.zeros(3, device="meta")]) is None


def test_engine_picks_the_loop_on_the_cpu_and_the_batched_pass_elsewhere() -> None:
    engine = Engine()
    assert not engine.use_batched(torch.device("cpu"))
    assert engine.use_batched(torch.device("cuda"))
    engine.batched = False  # a batched pass failed once: never again
    assert not engine.use_batched(torch.device("cuda"))


def test_a_copied_engine_has_its_own_empty_buffers() -> None:
    engine = Engine()
    engine.batched = False
    engine.buffers(2, [torch.zeros(3)])
    copy = copy_module.deepcopy(engine)
    assert copy.batched is False
    assert "buffers=[]" in repr(copy)
    assert pickle.loads(pickle.dumps(engine)).buffers(2, [torch.zeros(3)]) is not None
