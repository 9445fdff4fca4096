"""One tensor's columns of a Jacobian: stored row by row, or as the factors of a linear layer.

A :class:`~multiloss.balancing.Jacobian` is a list of blocks, one per tensor it differentiates
(a shared parameter, or the representation). Every block answers the same five questions, which
are all a balancing method needs: the Gramian of its rows, their squared norms, a combination of
the rows, the inner products of the rows with an update, and (rarely) the rows themselves.

* :class:`DenseBlock` stores the ``R`` gradients, shape ``(R, *tensor.shape)``.
* :class:`FactoredBlock` stores a weight's gradients the way a linear layer produces them: the
  layer's input ``X`` (``N x in``, one row per example) and, per loss, the gradient ``dY_i``
  with respect to the layer's output (``N x out``); the weight's gradient is ``dY_i^T X``. The
  Gramian then needs no ``(R, out, in)`` tensor at all (the "ghost norm" of per-example
  gradient clipping, here between losses): ``<dY_i^T X, dY_j^T X> = <(X X^T) dY_i, dY_j>``,
  which costs ``N^2 (in + R out)`` multiply-adds instead of the ``R N in out`` of forming the
  gradients, and the backward passes skip the weight's gradient entirely. It pays when the
  batch ``N`` is smaller than the layer's width (``_factored.py`` decides, per layer).
* :class:`RowsBlock` keeps the ``R`` gradients as the backward passes returned them, one tensor
  per row: for a few rows on the CPU, where copying them into an ``(R, *shape)`` block and
  reading that block twice more (the Gramian, the update) costs more than the handful of small
  products per block that separate rows need (:func:`rows_gramian`, :func:`rows_combine`).
* :class:`FactoredInputBlock` does the same for a representation ``z`` read only by linear
  heads: row ``i`` is ``dY_i W`` (the heads' output gradients times their weights), and the
  Gramian needs the ``O x O`` matrix ``W W^T`` of the heads' ``O`` outputs instead of ``N x d``
  numbers per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
from torch import Tensor

__all__ = [
    "Block",
    "DenseBlock",
    "FactoredBlock",
    "FactoredInputBlock",
    "RowsBlock",
    "gram_rows",
    "mix_rows",
    "rows_combine",
    "rows_gramian",
]

# Below this many columns a plain matrix product is as fast as anything (measured on 2 cores).
_SPLIT_MIN = 32768
# Column chunks of the split products: enough for every thread to get several.
_CHUNKS = 16


def _float(tensor: Tensor) -> Tensor:
    """Half-precision gradients are reduced in float32 (float64 stays float64)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def _split(flat: Tensor) -> bool:
    """Whether the products over a wide ``(R, n)`` matrix are split along ``n``: on the CPU, a
    matrix product with a handful of rows and very many columns runs on one thread."""
    return flat.device.type == "cpu" and flat.shape[1] >= _SPLIT_MIN


def _chunked(flat: Tensor) -> tuple[Tensor, Tensor]:
    """``flat`` as ``(chunks, R, n / chunks)`` column chunks, and the columns left over."""
    rows, columns = flat.shape
    whole = columns // _CHUNKS * _CHUNKS
    chunks = flat[:, :whole].reshape(rows, _CHUNKS, whole // _CHUNKS).transpose(0, 1)
    return chunks, flat[:, whole:]


def gram_rows(flat: Tensor) -> Tensor:
    """``flat @ flat.T`` for a ``(R, n)`` float matrix, with the kernel that suits its shape.

    On the CPU, ``mm`` with ``R`` small and ``n`` large uses one thread (334 against 113 us for
    two rows of 790k columns, 2 threads): two rows take three dot products, up to four rows
    (and from 16) a batched product over column chunks. Eight rows keep ``mm``, which measured
    fastest there.

    Example:
        >>> import torch
        >>> flat = torch.randn(3, 40000, dtype=torch.float64)
        >>> torch.allclose(gram_rows(flat), flat @ flat.T)
        True
    """
    rows = flat.shape[0]
    if not _split(flat) or 4 < rows < 16:
        return flat @ flat.T
    if rows == 1:
        return flat[0].dot(flat[0]).reshape(1, 1)
    if rows == 2:
        first, second = flat[0], flat[1]
        cross = first.dot(second)
        return torch.stack([first.dot(first), cross, cross, second.dot(second)]).reshape(2, 2)
    chunks, rest = _chunked(flat)
    return torch.bmm(chunks, chunks.transpose(1, 2)).sum(0) + rest @ rest.T


def mix_rows(weights: Tensor, flat: Tensor) -> Tensor:
    """``weights @ flat``: ``(R,)`` times ``(R, n)``, split along ``n`` where that is faster.

    Example:
        >>> import torch
        >>> flat, weights = torch.randn(2, 40000, dtype=torch.float64), torch.rand(2)
        >>> torch.allclose(mix_rows(weights, flat), weights.double() @ flat)
        True
    """
    weights = weights.to(flat.dtype)
    if not _split(flat):
        return weights @ flat
    chunks, rest = _chunked(flat)
    mixed = torch.bmm(weights.expand(_CHUNKS, 1, -1), chunks).reshape(-1)
    return torch.cat([mixed, weights @ rest]) if rest.shape[1] else mixed


def _factored_gramian(mixed: Tensor, grads: Tensor) -> Tensor:
    """``<mixed_i, grads_j>`` for ``(R, ...)`` tensors, symmetrized (the solvers expect an
    exactly symmetric matrix; the two products round differently), in float32."""
    rows = grads.shape[0]
    gram = mixed.reshape(rows, -1) @ grads.reshape(rows, -1).T
    return (0.5 * (gram + gram.T)).to(torch.float32)


class DenseBlock:
    """``R`` gradients of one tensor, stored: ``data`` has shape ``(R, *tensor.shape)``.

    Example:
        >>> import torch
        >>> block = DenseBlock(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> block.gramian()
        tensor([[1., 1.],
                [1., 2.]])
        >>> block.combine(torch.tensor([1.0, -1.0]))
        tensor([ 0., -1.])
    """

    def __init__(self, data: Tensor) -> None:
        self.data = data
        self.rows = int(data.shape[0])
        self.device = data.device

    def _flat(self) -> Tensor:
        return _float(self.data.reshape(self.rows, -1))

    def gramian(self) -> Tensor:
        """``(R, R)`` float32 inner products of the rows."""
        return gram_rows(self._flat()).to(torch.float32)

    def squared_norms(self) -> Tensor:
        """``(R,)`` float32 squared norms of the rows (``R`` times cheaper than the Gramian)."""
        # In the block's own precision (float64 cannot be reduced "to" float32 by vector_norm).
        norms: Tensor = torch.linalg.vector_norm(self._flat(), dim=1)
        return (norms**2).to(torch.float32)

    def combine(self, weights: Tensor) -> Tensor:
        """``sum_i weights[i] * row_i``, shaped like the tensor."""
        flat = self.data.reshape(self.rows, -1)
        return mix_rows(weights, flat).reshape(self.data.shape[1:])

    def dot(self, part: Tensor) -> Tensor:
        """``(R,)`` float32 inner products of each row with ``part`` (shaped like the tensor)."""
        flat = self.data.reshape(self.rows, -1)
        return (flat @ part.reshape(-1).to(flat.dtype)).to(torch.float32)

    def dense(self) -> Tensor:
        """The rows, ``(R, *tensor.shape)``."""
        return self.data

    def select(self, index: Tensor) -> DenseBlock:
        """The block of rows ``index`` (a copy)."""
        return DenseBlock(self.data.index_select(0, index.to(self.data.device)))

    def size(self) -> int:
        """Elements of the tensor (columns of the Jacobian)."""
        return int(self.data[0].numel())


@cache
def _pair_positions(rows: int) -> tuple[tuple[int, int], ...]:
    """The pairs ``i <= j`` of ``rows`` rows, in the order :func:`rows_gramian` computes them."""
    return tuple((i, j) for i in range(rows) for j in range(i, rows))


@cache
def _pair_index(rows: int, device: torch.device) -> Tensor:
    """``index[i, j]``: the position of the pair ``(min, max)`` in :func:`_pair_positions`."""
    position = {pair: k for k, pair in enumerate(_pair_positions(rows))}
    pairs = [[position[min(i, j), max(i, j)] for j in range(rows)] for i in range(rows)]
    return torch.tensor(pairs, device=device)


def _flat_rows(part: RowsBlock) -> list[Tensor]:
    return [_float(row).reshape(-1) for row in part.tensors]


def rows_gramian(parts: Sequence[RowsBlock]) -> Tensor:
    """``(R, R)`` float32 Gramian of blocks kept as rows: one dot product per pair of rows and
    block, reduced over the blocks at once (``R (R + 1) / 2`` products per block: meant for a
    few rows, see :class:`RowsBlock`).

    Example:
        >>> import torch
        >>> a, b = torch.randn(2, 3), torch.randn(2, 5)
        >>> gram = rows_gramian([RowsBlock(list(a)), RowsBlock(list(b))])
        >>> torch.allclose(gram, a @ a.T + b @ b.T)
        True
    """
    rows = parts[0].rows
    flats = [_flat_rows(part) for part in parts]
    pairs = _pair_positions(rows)
    dots = [flat[i].dot(flat[j]) for i, j in pairs for flat in flats]
    sums = torch.stack(dots).view(len(pairs), len(parts)).sum(1).to(torch.float32)
    return sums[_pair_index(rows, sums.device)]


def rows_combine(parts: Sequence[RowsBlock], weights: Tensor) -> list[Tensor]:
    """``sum_i weights[i] * row_i`` for every block kept as rows, shaped like its tensor: one
    multi-tensor operation per row for all the blocks (new tensors: the rows stay as they are
    for whatever reads them next, e.g. the diagnostics).

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> rows_combine([RowsBlock(list(a))], torch.tensor([1.0, -1.0]))
        [tensor([-2., -2.])]
    """
    coefficients = weights.tolist()  # rows are kept on the CPU only: reading them is free
    mixed = list(torch._foreach_mul([part.tensors[0] for part in parts], coefficients[0]))
    for row in range(1, parts[0].rows):
        torch._foreach_add_(mixed, [part.tensors[row] for part in parts], alpha=coefficients[row])
    return mixed


class RowsBlock:
    """``R`` gradients of one tensor, one tensor per row, as the backward passes returned them.

    :class:`DenseBlock` copies each gradient into a preallocated ``(R, *shape)`` block; this
    keeps them instead. The copy, and the flat passes over the block it allows, cost more than
    they save when there are only a few rows (two losses: the update and the Gramian of
    separate rows are 0.5 ms cheaper than those of the copied block, on the 3 x 512 benchmark
    trunk), so the engine keeps rows for ``R <= 4`` on the CPU. A :class:`Jacobian` whose blocks
    are all kept rows reduces them together (:func:`rows_gramian`, :func:`rows_combine`).

    Example:
        >>> import torch
        >>> block = RowsBlock([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])])
        >>> block.gramian()
        tensor([[1., 1.],
                [1., 2.]])
        >>> block.combine(torch.tensor([1.0, -1.0]))
        tensor([ 0., -1.])
    """

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        if not tensors:
            raise ValueError("a RowsBlock needs at least one row")
        self.tensors = list(tensors)
        self.rows = len(self.tensors)
        self.device = self.tensors[0].device

    def gramian(self) -> Tensor:
        """``(R, R)`` float32 inner products of the rows."""
        return rows_gramian([self])

    def squared_norms(self) -> Tensor:
        """``(R,)`` float32 squared norms of the rows."""
        return torch.stack([flat.dot(flat) for flat in _flat_rows(self)]).to(torch.float32)

    def combine(self, weights: Tensor) -> Tensor:
        """``sum_i weights[i] * row_i``, shaped like the tensor."""
        return rows_combine([self], weights)[0]

    def dot(self, part: Tensor) -> Tensor:
        """``(R,)`` float32 inner products of each row with ``part`` (shaped like the tensor)."""
        flats = _flat_rows(self)
        other = part.reshape(-1).to(flats[0].dtype)
        return torch.stack([flat.dot(other) for flat in flats]).to(torch.float32)

    def dense(self) -> Tensor:
        """The rows, ``(R, *tensor.shape)`` (stacked now: a copy)."""
        return torch.stack(self.tensors)

    def select(self, index: Tensor) -> RowsBlock:
        """The block of rows ``index`` (no copy)."""
        return RowsBlock([self.tensors[row] for row in index.tolist()])

    def size(self) -> int:
        """Elements of the tensor (columns of the Jacobian)."""
        return int(self.tensors[0].numel())


class FactoredBlock:
    """``R`` gradients of a weight ``W`` used as ``Y = X W^T`` (``transposed``) or ``Y = X W``.

    Row ``i`` is ``dY_i^T X`` (``W`` of shape ``out x in``) or ``X^T dY_i`` (``in x out``),
    never formed unless :meth:`dense` is called.

    Args:
        inputs: ``X``, ``(N, in)``: the layer's inputs (the uses of a weight applied several
            times are stacked along ``N``).
        grads: ``(R, N, out)``: each loss's gradient with respect to the layer's output.
        transposed: ``W`` is ``out x in`` (``nn.Linear``); else ``in x out``.

    Example:
        >>> import torch
        >>> x, dy = torch.randn(5, 3), torch.randn(2, 5, 4)
        >>> block = FactoredBlock(x, dy, transposed=True)
        >>> rows = block.dense()  # (2, 4, 3): dY_i^T X
        >>> torch.allclose(block.gramian(), rows.flatten(1) @ rows.flatten(1).T, atol=1e-5)
        True
    """

    def __init__(self, inputs: Tensor, grads: Tensor, *, transposed: bool) -> None:
        if inputs.dim() != 2 or grads.dim() != 3 or grads.shape[1] != inputs.shape[0]:
            raise ValueError(
                "a FactoredBlock needs inputs of shape (N, in) and grads of shape (R, N, out); "
                f"got inputs {tuple(inputs.shape)} and grads {tuple(grads.shape)}"
            )
        self.inputs = inputs
        self.grads = grads
        self.transposed = transposed
        self.rows = int(grads.shape[0])
        self.device = grads.device
        self._kernel: list[Tensor] = []  # X X^T, shared with the blocks select() makes

    def _x(self) -> Tensor:
        return _float(self.inputs)

    def kernel(self) -> Tensor:
        """``X X^T`` (``N x N``), computed once."""
        if not self._kernel:
            x = self._x()
            self._kernel.append(x @ x.T)
        return self._kernel[0]

    def gramian(self) -> Tensor:
        """``(R, R)`` float32: ``<(X X^T) dY_i, dY_j>``, without forming any row."""
        grads = _float(self.grads)
        kernel = self.kernel().to(grads.dtype)
        mixed = torch.matmul(kernel, grads)  # (R, N, out): one GEMM per row against X X^T
        return _factored_gramian(mixed, grads)

    def squared_norms(self) -> Tensor:
        """``(R,)`` float32 squared norms (the Gramian's diagonal: no cheaper route here)."""
        return self.gramian().diagonal().clamp_min(0.0)

    def combine(self, weights: Tensor) -> Tensor:
        """``sum_i weights[i] * row_i``: one matrix product with the combined ``dY``."""
        grads = _float(self.grads)
        mixed = (weights.to(grads.dtype) @ grads.reshape(self.rows, -1)).reshape(grads.shape[1:])
        x = self._x().to(grads.dtype)
        return mixed.T @ x if self.transposed else x.T @ mixed

    def dot(self, part: Tensor) -> Tensor:
        """``(R,)`` float32 ``<row_i, part>`` = ``<dY_i, X part^T>`` (or ``X part``)."""
        grads = _float(self.grads)
        x = self._x().to(grads.dtype)
        projected = x @ (part.to(grads.dtype).T if self.transposed else part.to(grads.dtype))
        return (grads.reshape(self.rows, -1) @ projected.reshape(-1)).to(torch.float32)

    def dense(self) -> Tensor:
        """The rows, ``(R, out, in)`` or ``(R, in, out)`` (formed now: costs ``R N in out``)."""
        grads = _float(self.grads)
        x = self._x().to(grads.dtype)
        if self.transposed:
            return torch.matmul(grads.transpose(1, 2), x)
        return torch.matmul(x.T, grads)

    def select(self, index: Tensor) -> FactoredBlock:
        """The block of rows ``index`` (copies those ``dY``; shares ``X`` and ``X X^T``)."""
        block = FactoredBlock(
            self.inputs,
            self.grads.index_select(0, index.to(self.grads.device)),
            transposed=self.transposed,
        )
        block._kernel = self._kernel
        return block

    def size(self) -> int:
        """Elements of the weight (columns of the Jacobian)."""
        return int(self.inputs.shape[1] * self.grads.shape[2])


class FactoredInputBlock:
    """``R`` gradients of a tensor ``z`` that only enters linear layers: ``Y_u = z W_u^T``.

    Row ``i`` is ``dY_i W`` (``N x d``), with ``dY_i`` the loss's gradients at every layer's
    output side by side (``N x O``) and ``W`` the layers' weights stacked (``O x d``): the
    per-loss gradient of a representation read by linear heads. The Gramian is
    ``<dY_i (W W^T), dY_j>``: ``O x O`` instead of ``N x d`` per row, so a few narrow heads
    on a wide representation cost almost nothing.

    Args:
        grads: ``(R, N, O)``: each loss's gradient at the layers' outputs.
        weights: ``W``, ``(O, d)``.

    Example:
        >>> import torch
        >>> dy, w = torch.randn(2, 5, 3), torch.randn(3, 4)
        >>> block = FactoredInputBlock(dy, w)
        >>> rows = block.dense()  # (2, 5, 4): dY_i W
        >>> torch.allclose(block.gramian(), rows.flatten(1) @ rows.flatten(1).T, atol=1e-5)
        True
    """

    def __init__(self, grads: Tensor, weights: Tensor) -> None:
        if weights.dim() != 2 or grads.dim() != 3 or grads.shape[2] != weights.shape[0]:
            raise ValueError(
                "a FactoredInputBlock needs grads of shape (R, N, O) and weights of shape "
                f"(O, d); got grads {tuple(grads.shape)} and weights {tuple(weights.shape)}"
            )
        self.grads = grads
        self.weights = weights
        self.rows = int(grads.shape[0])
        self.device = grads.device

    def _parts(self) -> tuple[Tensor, Tensor]:
        grads = _float(self.grads)
        return grads, _float(self.weights).to(grads.dtype)

    def gramian(self) -> Tensor:
        """``(R, R)`` float32: ``<dY_i (W W^T), dY_j>``."""
        grads, w = self._parts()
        return _factored_gramian(grads @ (w @ w.T), grads)

    def squared_norms(self) -> Tensor:
        """``(R,)`` float32 squared norms (the Gramian's diagonal)."""
        return self.gramian().diagonal().clamp_min(0.0)

    def combine(self, weights: Tensor) -> Tensor:
        """``sum_i weights[i] * dY_i W``, ``(N, d)``."""
        grads, w = self._parts()
        mixed = (weights.to(grads.dtype) @ grads.reshape(self.rows, -1)).reshape(grads.shape[1:])
        return mixed @ w

    def dot(self, part: Tensor) -> Tensor:
        """``(R,)`` float32 ``<dY_i W, part>`` = ``<dY_i, part W^T>``."""
        grads, w = self._parts()
        projected = part.reshape(grads.shape[1], -1).to(grads.dtype) @ w.T
        return (grads.reshape(self.rows, -1) @ projected.reshape(-1)).to(torch.float32)

    def dense(self) -> Tensor:
        """The rows, ``(R, N, d)`` (formed now)."""
        grads, w = self._parts()
        return grads @ w

    def select(self, index: Tensor) -> FactoredInputBlock:
        """The block of rows ``index`` (copies those ``dY``)."""
        return FactoredInputBlock(
            self.grads.index_select(0, index.to(self.grads.device)), self.weights
        )

    def size(self) -> int:
        """Elements of ``z`` (columns of the Jacobian)."""
        return int(self.grads.shape[1] * self.weights.shape[1])


Block = DenseBlock | RowsBlock | FactoredBlock | FactoredInputBlock
