"""Both kinds of Jacobian block answer every question the same way (``_blocks.py``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from multiloss.balancing import Jacobian
from multiloss.balancing._blocks import (
    Block,
    DenseBlock,
    FactoredBlock,
    FactoredInputBlock,
    RowsBlock,
    gram_rows,
    mix_rows,
)


def _assert_same_answers(block: Block, data: Tensor, seed: int) -> None:
    """``block`` answers every question as the dense block of its rows ``data`` does."""
    dense = DenseBlock(data)
    generator = torch.Generator().manual_seed(seed)
    rows = data.shape[0]
    weights = torch.randn(rows, generator=generator, dtype=torch.float64)
    update = torch.randn(data.shape[1:], generator=generator, dtype=torch.float64)
    tol = {"rtol": 1e-5, "atol": 1e-5}  # the Gramians are returned in float32
    torch.testing.assert_close(block.gramian(), dense.gramian(), **tol)
    torch.testing.assert_close(block.squared_norms(), dense.squared_norms(), **tol)
    torch.testing.assert_close(block.combine(weights), dense.combine(weights))
    torch.testing.assert_close(block.dot(update), dense.dot(update), **tol)
    assert torch.equal(block.gramian(), block.gramian().T)
    index = torch.tensor([rows - 1, 0])
    chosen = block.select(index).dense()
    torch.testing.assert_close(chosen, dense.select(index).dense())
    assert block.size() == data[0].numel()


def _factored(rows: int, examples: int, fan_in: int, fan_out: int, seed: int, transposed: bool):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(examples, fan_in, generator=generator, dtype=torch.float64)
    dy = torch.randn(rows, examples, fan_out, generator=generator, dtype=torch.float64)
    return FactoredBlock(x, dy, transposed=transposed)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4),
    examples=st.integers(1, 6),
    fan_in=st.integers(1, 5),
    fan_out=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    transposed=st.booleans(),
)
def test_a_factored_block_agrees_with_its_rows(
    rows: int, examples: int, fan_in: int, fan_out: int, seed: int, transposed: bool
) -> None:
    block = _factored(rows, examples, fan_in, fan_out, seed, transposed)
    data = block.dense()
    expected_shape = (rows, fan_out, fan_in) if transposed else (rows, fan_in, fan_out)
    assert data.shape == expected_shape
    # The rows themselves, from the definition: dY_i^T X (or X^T dY_i), one loss at a time.
    for i in range(rows):
        row = block.grads[i].T @ block.inputs if transposed else block.inputs.T @ block.grads[i]
        torch.testing.assert_close(data[i], row)
    _assert_same_answers(block, data, seed + 1)


def test_select_shares_the_kernel_and_keeps_the_orientation() -> None:
    block = _factored(3, 4, 2, 5, seed=0, transposed=False)
    kernel = block.kernel()
    chosen = block.select(torch.tensor([2]))
    assert chosen.kernel() is kernel
    assert not chosen.transposed
    assert chosen.rows == 1


def test_a_jacobian_mixes_both_kinds_and_shows_rows_on_demand() -> None:
    factored = _factored(2, 3, 4, 2, seed=5, transposed=True)
    bias = torch.randn(2, 2, dtype=torch.float64)
    mixed = Jacobian([factored, bias])
    plain = Jacobian([factored.dense(), bias])
    assert mixed.factored
    assert not plain.factored
    torch.testing.assert_close(mixed.gramian(), plain.gramian(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed.matrix(), plain.matrix())
    coefficients = torch.tensor([0.5, -2.0])
    for a, b in zip(mixed.combine(coefficients), plain.combine(coefficients), strict=True):
        torch.testing.assert_close(a, b)
    assert [tuple(b.shape) for b in mixed.blocks] == [(2, 2, 4), (2, 2)]
    assert "factored=1" in repr(mixed)
    assert "size=10" in repr(mixed)


def test_a_factored_block_refuses_mismatched_factors() -> None:
    with pytest.raises(ValueError, match=r"inputs of shape \(N, in\).*got inputs \(3, 2\)"):
        FactoredBlock(torch.zeros(3, 2), torch.zeros(2, 4, 5), transposed=True)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4),
    examples=st.integers(1, 6),
    outputs=st.integers(1, 4),
    width=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_a_factored_input_block_agrees_with_its_rows(
    rows: int, examples: int, outputs: int, width: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    dy = torch.randn(rows, examples, outputs, generator=generator, dtype=torch.float64)
    w = torch.randn(outputs, width, generator=generator, dtype=torch.float64)
    block = FactoredInputBlock(dy, w)
    data = block.dense()
    for i in range(rows):  # the gradient with respect to z of y = z W^T: dY_i W
        torch.testing.assert_close(data[i], dy[i] @ w)
    _assert_same_answers(block, data, seed + 1)


def test_a_factored_input_block_refuses_mismatched_factors() -> None:
    with pytest.raises(ValueError, match=r"weights of shape \(O, d\); got grads \(2, 4, 5\)"):
        FactoredInputBlock(torch.zeros(2, 4, 5), torch.zeros(3, 7))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_a_rows_block_agrees_with_its_rows(
    rows: int, shape: list[int], seed: int, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(rows, *shape, generator=generator, dtype=dtype)
    block = RowsBlock(list(data))
    assert torch.equal(block.dense(), data)
    _assert_same_answers(block, data, seed + 1)


def test_a_rows_block_reads_expanded_rows_and_never_writes_them() -> None:
    # Autograd may hand back a broadcast gradient (stride 0): read, never modified in place.
    first = torch.ones(1, 3).expand(2, 3)
    second = torch.arange(6.0).reshape(2, 3)
    block = RowsBlock([first, second])
    data = torch.stack([first.contiguous(), second])
    _assert_same_answers(block, data, seed=3)
    combined = block.combine(torch.tensor([2.0, 1.0]))
    assert torch.equal(first, torch.ones(2, 3))
    assert combined.stride() == (3, 1)


def test_a_rows_block_refuses_no_rows() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        RowsBlock([])


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
def test_a_jacobian_of_kept_rows_reduces_them_together(rows: int) -> None:
    # Every block kept as rows: one Gramian and one combination over all of them, equal to
    # those of the same gradients copied into blocks (mixed dtypes too).
    generator = torch.Generator().manual_seed(rows)
    shapes = [(4, 3), (3,), (2, 2, 2)]
    dtypes = [torch.float32, torch.float64, torch.float32]
    data = [
        torch.randn(rows, *shape, generator=generator, dtype=dtype)
        for shape, dtype in zip(shapes, dtypes, strict=True)
    ]
    factors = torch.rand(rows, generator=generator) + 0.5

    def kept_rows() -> Jacobian:  # a fresh one each time: nothing cached from another call
        return Jacobian([RowsBlock(list(block)) for block in data]).scaled(factors)

    kept, copied = kept_rows(), Jacobian(data).scaled(factors)
    assert not kept.factored
    # Norms first (no Gramian computed yet: the blocks' own squared norms), then the Gramian.
    torch.testing.assert_close(kept.norms(), copied.norms(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept.gramian(), copied.gramian(), rtol=1e-5, atol=1e-5)
    coefficients = torch.randn(rows, generator=generator)
    for a, b in zip(kept.combine(coefficients), copied.combine(coefficients), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(kept.matrix(), copied.matrix())
    chosen = kept_rows().take([rows - 1, 0])
    expected = Jacobian(data).scaled(factors).take([rows - 1, 0])
    torch.testing.assert_close(chosen.gramian(), expected.gramian(), rtol=1e-5, atol=1e-5)


# -- the CPU kernels of wide products (gram_rows, mix_rows) ---------------------------------------
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("columns", [100, 40_003])  # below the split, and above with a remainder
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_rows_and_mix_rows_are_the_plain_products(
    rows: int, columns: int, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(rows * columns)
    wide = torch.randn(rows, 2 * columns, generator=generator, dtype=dtype)
    flat = wide[:, ::2]  # a strided view as well: the kernels may not assume contiguity
    weights = torch.randn(rows, generator=generator)
    tol = {"rtol": 1e-5, "atol": 1e-3} if dtype == torch.float32 else {}
    torch.testing.assert_close(gram_rows(flat), flat @ flat.T, **tol)
    torch.testing.assert_close(mix_rows(weights, flat), weights.to(dtype) @ flat, **tol)
    assert mix_rows(weights, flat).shape == (columns,)


def test_a_jacobian_over_the_engines_buffers_uses_one_matrix() -> None:
    # The engine's CPU buffers are column slices of one (R, P) matrix: the Gramian and the
    # combination run over it, and give what the blocks one by one give.
    from multiloss.balancing._jacobian import Engine

    tensors = [torch.zeros(300, 200), torch.zeros(200), torch.zeros(()), torch.zeros(7, 3)]
    buffers = Engine().buffers(3, tensors)
    assert buffers is not None
    generator = torch.Generator().manual_seed(0)
    for buffer in buffers:
        buffer.copy_(torch.randn(buffer.shape, generator=generator))
    jacobian = Jacobian(buffers)
    flat = jacobian._flat()
    assert flat is not None
    assert flat.shape == (3, 60_222)
    separate = Jacobian([buffer.clone() for buffer in buffers])
    assert separate._flat() is None
    coefficients = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(jacobian.gramian(), separate.gramian(), rtol=1e-5, atol=1e-3)
    for ours, theirs in zip(
        jacobian.combine(coefficients), separate.combine(coefficients), strict=True
    ):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    scaled = jacobian.scaled(torch.tensor([1.0, 2.0, 3.0]))
    assert scaled._flat() is flat  # a view of the same rows
    assert jacobian.select([0, 1])._flat() is None  # some of the columns only
    assert jacobian.take([0, 2])._flat() is None  # rows copied out


def test_engine_buffers_of_mixed_dtypes_are_separate() -> None:
    from multiloss.balancing._jacobian import Engine

    buffers = Engine().buffers(2, [torch.zeros(4), torch.zeros(4, dtype=torch.float64)])
    assert buffers is not None
    assert [b.dtype for b in buffers] == [torch.float32, torch.float64]
    assert Jacobian(buffers)._flat() is None
