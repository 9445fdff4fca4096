"""Per-loss gradients: one batched backward pass, a loop only where it must.

``per_loss_gradients`` differentiates ``R`` scalar losses with respect to a list of tensors and
returns one block of shape ``(R, *tensor.shape)`` per tensor. It runs a single backward pass
batched over the losses (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. ``vmap`` over
the backward), and falls back to a loop of ``R`` backward passes only when an operation in the
graph has no batching rule (or when the caller asks for the loop: the balancers do on the CPU,
where ``R`` plain backward passes beat the batched one). The graph is kept only when the caller
asks for it.

``Engine`` is what a balancer remembers about that from one step to the next: whether batching
failed (so it is not retried every step), and, on the CPU, the loop's output buffers. A fresh
``(R, P)`` buffer every step is not free there: the allocator returns large blocks to the OS,
so each step page-faults the whole Jacobian back in (measured 4.3 ms of a 48 ms step, 8 losses
over a 3x512 trunk). Reusing the buffer costs ``R x P`` floats held between steps, which is
what the CUDA caching allocator does on its own on a GPU.

``Jacobian`` holds those blocks without ever concatenating them into an ``(R, P)`` matrix (a copy
of the whole thing, as slow as a backward pass on a CPU): the Gramian ``J J^T`` is a sum of
per-block products and a combination ``sum_i a_i J_i`` is computed block by block. Per-row factors
are applied lazily, so rescaling the rows (a wrapper dividing each loss by its running mean, the
fixed weights, the AMP loss scale) costs nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge

from multiloss.balancing._blocks import (
    Block,
    DenseBlock,
    FactoredBlock,
    FactoredInputBlock,
    RowsBlock,
    gram_rows,
    mix_rows,
    rows_combine,
    rows_gramian,
)

__all__ = [
    "Engine",
    "Jacobian",
    "Target",
    "gradients_at",
    "is_unit_scale",
    "per_loss_gradients",
]


def _stack(outputs: Sequence[Tensor]) -> Tensor:
    first = outputs[0].dtype
    if any(output.dtype != first for output in outputs):  # bf16 and fp32 side by side
        return torch.stack([output.float().reshape(()) for output in outputs])
    if all(output.dim() == 0 for output in outputs):
        return torch.stack(list(outputs))
    return torch.stack([output.reshape(()) for output in outputs])


class Target(NamedTuple):
    """Something to differentiate with respect to: a tensor, or the output of a graph node.

    ``torch.autograd.grad`` accepts both; a ``GradientEdge`` (a linear layer's output, for a
    factored block) has no tensor to read the shape from, so the shape travels with it.
    ``owner``: the one output (by position) whose graph reaches the target, when the caller
    knows there is only one (a head read by a single loss); ``None``: unknown or several.
    """

    input: Tensor | GradientEdge
    shape: torch.Size
    dtype: torch.dtype
    device: torch.device
    owner: int | None = None

    @staticmethod
    def of(tensor: Tensor) -> Target:
        """The target for a tensor."""
        return Target(tensor, tensor.shape, tensor.dtype, tensor.device)


def is_unit_scale(scale: float | Tensor) -> bool:
    """Whether a gradient scale is the number 1 (a tensor scale never counts as one: reading
    it would wait for the device)."""
    return isinstance(scale, float | int) and float(scale) == 1.0


def _empty_blocks(rows: int, targets: Sequence[Target]) -> list[Tensor]:
    return [torch.empty((rows, *t.shape), dtype=t.dtype, device=t.device) for t in targets]


def _flat_blocks(rows: int, targets: Sequence[Target]) -> list[Tensor]:
    """Blocks that are consecutive column slices of one ``(rows, P)`` matrix, when every
    target has the same dtype and device (:meth:`Jacobian.raw_gramian` and
    :meth:`Jacobian.combine` then run one product over it instead of one per block)."""
    first = targets[0]
    if any(t.dtype != first.dtype or t.device != first.device for t in targets):
        return _empty_blocks(rows, targets)
    sizes = [math.prod(t.shape) for t in targets]
    flat = torch.empty((rows, sum(sizes)), dtype=first.dtype, device=first.device)
    return [
        part.view(rows, *t.shape) for part, t in zip(flat.split(sizes, dim=1), targets, strict=True)
    ]


@contextmanager
def _edge_catchers(targets: Sequence[Target]) -> Iterator[dict[int, Tensor]]:
    """Pre-hooks, for the duration of the block, that record the gradient entering each
    ``GradientEdge`` target's node (by the target's position).

    ``autograd.grad`` captures an edge's gradient before the hooks of the tensor it belongs to
    (``y.register_hook``) when the node itself has to run (a lower layer needs it), and after
    them when it does not. The node's own pre-hooks run after the tensor's hooks, so what they
    see is what the node uses: that value wins where it exists.
    """
    caught: dict[int, Tensor] = {}
    handles = []
    for position, target in enumerate(targets):
        if isinstance(target.input, GradientEdge):
            slot = target.input.output_nr

            def catch(
                grads: tuple[Tensor, ...], position: int = position, slot: int = slot
            ) -> None:
                caught[position] = grads[slot]

            handles.append(target.input.node.register_prehook(catch))
    try:
        yield caught
    finally:
        for handle in handles:
            handle.remove()


def _seed(output: Tensor, grad_scale: float | Tensor) -> Tensor | None:
    """The gradient a backward pass of ``output`` starts from (``None``: ones)."""
    return None if is_unit_scale(grad_scale) else torch.ones_like(output) * grad_scale


#: Per extra tensor, the ``(row, gradient)`` pairs of the outputs that reach it.
Collected = list[list[tuple[int, Tensor]]]


def _loop(
    outputs: Sequence[Tensor],
    targets: Sequence[Target],
    grad_scale: float | Tensor,
    retain_graph: bool,
    out: Sequence[Tensor] | None = None,
    extra: Sequence[Tensor] = (),
    collected: Collected | None = None,
    free_each: bool = False,
    unused: list[int] | None = None,
    keep: bool = False,
) -> list[Any]:
    # Each gradient is copied into its row as soon as it exists, so the peak is the blocks
    # plus one gradient, not twice the blocks (a list of rows, then a stacked copy). ``keep``:
    # the gradients are the rows (``RowsBlock``), no block and no copy.
    rows = len(outputs)
    kept: list[list[Tensor]] = [[] for _ in targets]
    blocks = [] if keep else list(out) if out is not None else _empty_blocks(rows, targets)
    last = rows - 1
    inputs: Any = [target.input for target in targets]  # tensors and edges, mixed
    extra = list(extra) if collected is not None else []
    pairs: Collected = [[] for _ in extra]
    with _edge_catchers(targets) as caught:
        for index, output in enumerate(outputs):
            if not output.requires_grad:
                for block in blocks:
                    block[index].zero_()
                for found_rows, target in zip(kept if keep else (), targets, strict=False):
                    found_rows.append(_zero_row(target))
                if unused is not None:
                    unused.append(index)
                continue
            caught.clear()
            grads = torch.autograd.grad(
                output,
                inputs + extra,
                grad_outputs=_seed(output, grad_scale),
                # free_each: the passes share no operation (heads above z): each frees its own.
                retain_graph=not free_each and (retain_graph or index < last),
                allow_unused=True,  # unused: None, a zero row (materialize_grads refuses edges)
            )
            for found, grad in zip(pairs, grads[len(inputs) :], strict=True):
                if grad is not None:
                    found.append((index, grad))
            grads = grads[: len(inputs)]
            reached = False
            if keep:
                for position, (found_rows, grad) in enumerate(zip(kept, grads, strict=True)):
                    grad = caught.get(position, grad)
                    reached = reached or grad is not None
                    found_rows.append(_zero_row(targets[position]) if grad is None else grad)
            for position, (block, grad) in enumerate(zip(blocks, grads, strict=not keep)):
                grad = caught.get(position, grad)
                if grad is None:
                    block[index].zero_()
                else:
                    block[index].copy_(grad)
                    reached = True
            if not reached and unused is not None:
                unused.append(index)
            del grads
    if collected is not None:
        collected[:] = pairs
    return [RowsBlock(found_rows) for found_rows in kept] if keep else blocks


def _zero_row(target: Target) -> Tensor:
    return torch.zeros(target.shape, dtype=target.dtype, device=target.device)


def _disjoint(
    outputs: Sequence[Tensor],
    targets: Sequence[Target],
    grad_scale: float | Tensor,
    retain_graph: bool,
    out: Sequence[Tensor] | None = None,
    unused: list[int] | None = None,
) -> list[Tensor]:
    """The loop's result in one backward pass, when each target is reached by one output only.

    The gradient of the sum of the outputs at a target reached by output ``i`` alone is output
    ``i``'s own gradient there (the others contribute nothing), and it is 0 in every other row.
    Per-loss heads on a shared representation are the case: ``R`` engine calls become one.
    """
    rows = len(outputs)
    blocks = list(out) if out is not None else _empty_blocks(rows, targets)
    live = [output for output in outputs if output.requires_grad]
    inputs: Any = [target.input for target in targets]
    with _edge_catchers(targets) as caught:
        seeds = None if is_unit_scale(grad_scale) else [_seed(o, grad_scale) for o in live]
        grads = torch.autograd.grad(
            live, inputs, grad_outputs=seeds, retain_graph=retain_graph, allow_unused=True
        )
    reached: set[int] = set()
    for position, (block, grad, target) in enumerate(zip(blocks, grads, targets, strict=True)):
        grad = caught.get(position, grad)
        block.zero_()
        if grad is not None and target.owner is not None:
            block[target.owner].copy_(grad)
            reached.add(target.owner)
    if unused is not None:
        unused.extend(row for row in range(rows) if row not in reached)
    return blocks


def per_loss_gradients(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    *,
    retain_graph: bool,
    grad_scale: float | Tensor = 1.0,
    batched: bool = True,
    out: Sequence[Tensor] | None = None,
) -> tuple[list[Tensor], bool]:
    """The gradient of each of ``outputs`` with respect to each of ``inputs``.

    Args:
        outputs: ``R`` scalar tensors (losses).
        inputs: Tensors to differentiate with respect to (parameters or a representation).
        retain_graph: Keep the graph for a later backward pass.
        grad_scale: Multiplies every gradient (the AMP loss scale: the backward pass runs at
            that scale so fp16 intermediate gradients do not underflow).
        batched: Try the single batched pass first (``False``: go straight to the loop).
        out: Blocks for the loop to fill in place (one ``(R, *input.shape)`` tensor per input,
            e.g. from :meth:`Engine.buffers`); the batched pass ignores them.

    Returns:
        One block per input, of shape ``(R, *input.shape)`` (zeros where an output does not
        depend on the input), and whether batching still looks usable: ``False`` only when the
        batched pass was tried and failed. The failure is reported as a warning and the loop
        is used instead; callers remember it (pass ``batched=False`` from then on) rather than
        retry every step.

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> blocks, batch_ok = per_loss_gradients([w.sum(), (w**2).sum()], [w],
        ...                                           retain_graph=False)
        >>> blocks[0]
        tensor([[1., 1.],
                [2., 4.]])
    """
    return gradients_at(
        outputs,
        [Target.of(t) for t in inputs],
        retain_graph=retain_graph,
        grad_scale=grad_scale,
        batched=batched,
        out=out,
    )


def gradients_at(
    outputs: Sequence[Tensor],
    targets: Sequence[Target],
    *,
    retain_graph: bool,
    grad_scale: float | Tensor = 1.0,
    batched: bool = True,
    out: Sequence[Tensor] | None = None,
    extra: Sequence[Tensor] = (),
    collected: Collected | None = None,
    free_each: bool = False,
    unused: list[int] | None = None,
    keep_rows: bool = False,
) -> tuple[list[Any], bool]:
    """:func:`per_loss_gradients` for targets (tensors or graph edges).

    The loop reads an edge's gradient after the hooks of the tensor it belongs to
    (:func:`_edge_catchers`); the batched pass cannot, so callers give it tensors only. When
    every target has an ``owner`` (one output alone reaches it), one backward pass of all the
    outputs gives every row at once (:func:`_disjoint`).

    ``extra``: tensors whose gradients the loop also takes in each of its passes (task-specific
    parameters, which then need no backward pass of their own), put in ``collected`` as
    ``(row, gradient)`` pairs per tensor. Only the loop does: ``collected`` is left empty by
    the other routes, which then keep the graph whatever ``retain_graph`` says (the caller
    still has the other parameters' backward pass to run). ``free_each``: the loop's passes
    share no operation, so each may free what it ran (the heads above a representation).
    ``unused``: where given, the loop and the disjoint pass append the rows whose output
    reaches none of the targets (their gradient is absent, not computed as zero); the batched
    pass cannot tell, so callers that need it pass ``batched=False``. ``keep_rows``: where the
    loop runs, each block is a :class:`~multiloss.balancing._blocks.RowsBlock` of the gradients
    as returned (no copy into ``out``); the other routes return tensors as usual.
    """
    if not outputs or not targets:
        raise ValueError(
            f"per_loss_gradients needs at least one output and one input; got {len(outputs)} "
            f"outputs and {len(targets)} inputs"
        )
    rows = len(outputs)
    if not any(output.requires_grad for output in outputs):
        zeros = [torch.zeros((rows, *t.shape), dtype=t.dtype, device=t.device) for t in targets]
        if unused is not None:
            unused.extend(range(rows))
        return zeros, batched
    if rows > 1 and all(target.owner is not None for target in targets):
        # ``extra`` is not taken here: the caller's backward pass still needs the graph.
        return (
            _disjoint(outputs, targets, grad_scale, retain_graph or bool(extra), out, unused),
            batched,
        )
    if batched and rows > 1:
        stacked = _stack(outputs)
        eye = torch.eye(rows, dtype=stacked.dtype, device=stacked.device)
        if not is_unit_scale(grad_scale):
            eye = eye * grad_scale
        try:
            # Keep the graph if the caller asked, or if a failure half-way (an op without a
            # batching rule) would otherwise leave nothing for the loop to fall back on.
            grads = torch.autograd.grad(
                stacked,
                cast(Any, [target.input for target in targets]),  # tensors and edges, mixed
                grad_outputs=eye,
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=True,
            )
        except RuntimeError as error:
            warnings.warn(
                "multiloss could not batch the per-loss backward pass over the losses "
                f"({str(error).splitlines()[0][:200]}); falling back to one backward pass per "
                "loss, which is slower but exact",
                RuntimeWarning,
                stacklevel=3,
            )
            return (
                _loop(outputs, targets, grad_scale, retain_graph, out, extra, collected, free_each),
                False,
            )
        blocks: list[Tensor] = []
        for grad, target in zip(grads, targets, strict=True):
            if grad is None:  # no loss depends on it
                grad = torch.zeros((rows, *target.shape), dtype=target.dtype, device=target.device)
            elif grad.shape != (rows, *target.shape):  # unbatched zeros: give them their rows
                grad = grad.expand(rows, *target.shape)
            blocks.append(grad.to(target.dtype))
        return blocks, True
    blocks = _loop(
        outputs,
        targets,
        grad_scale,
        retain_graph,
        None if keep_rows else out,
        extra,
        collected,
        free_each,
        unused,
        keep=keep_rows,
    )
    return blocks, batched


class Engine:
    """How a balancer computes its per-loss gradients, remembered from one call to the next.

    * ``batched``: ``None`` until something is known (then the device decides: the batched
      pass on accelerators, the loop on the CPU, where ``R`` plain backward passes are faster),
      ``False`` once a batched pass failed (an operation without a batching rule), so the
      failure is not retried at every step.
    * ``factor_linear``: keep the per-loss gradients of linear layers' weights factored when
      that is cheaper (``_factored.py``; on by default, ``False`` forms every row).
    * :meth:`buffers`: the loop's output blocks on the CPU, kept for the next call with the same
      shapes (one set at a time). They are overwritten by that call: a method that keeps
      per-loss gradients past its step must copy them. (A few rows are not copied at all: the
      session asks the loop to keep them as autograd returns them, ``_blocks.RowsBlock``.)

    Example:
        >>> import torch
        >>> engine = Engine()
        >>> w = torch.zeros(3, requires_grad=True)
        >>> first = engine.buffers(2, [w])
        >>> first[0].shape, engine.buffers(2, [w])[0] is first[0]
        (torch.Size([2, 3]), True)
        >>> engine
        Engine(batched=None, factor_linear=True, buffers=[(2, 3)])
    """

    def __init__(self) -> None:
        self.batched: bool | None = None
        self.factor_linear = True
        self._key: tuple[object, ...] | None = None
        self._blocks: list[Tensor] = []

    def use_batched(self, device: torch.device) -> bool:
        """Whether to try the batched pass for outputs on ``device``."""
        return self.batched if self.batched is not None else device.type != "cpu"

    def buffers(self, rows: int, inputs: Sequence[Tensor | Target]) -> list[Tensor] | None:
        """Reusable ``(rows, *input.shape)`` blocks for CPU inputs; ``None`` elsewhere (the
        CUDA caching allocator already recycles memory, and held buffers would only take
        space from the next forward pass)."""
        targets = [t if isinstance(t, Target) else Target.of(t) for t in inputs]
        if not targets or any(t.device.type != "cpu" for t in targets):
            return None
        key = (rows, *((tuple(t.shape), t.dtype) for t in targets))
        if key != self._key:
            self._blocks = []  # free the old set before allocating the new one
            self._blocks = _flat_blocks(rows, targets)
            self._key = key
        return self._blocks

    def clear(self) -> None:
        """Drop the kept buffers (they come back at the next call)."""
        self._key, self._blocks = None, []

    def __deepcopy__(self, memo: dict[int, object]) -> Engine:
        # A copy of a balancer gets its own, empty buffers: sharing them would let two
        # balancers overwrite each other's gradients, and copying them is a waste.
        copy = Engine()
        copy.batched = self.batched
        copy.factor_linear = self.factor_linear
        return copy

    def __getstate__(self) -> dict[str, object]:
        return {
            "batched": self.batched,
            "factor_linear": self.factor_linear,
            "_key": None,
            "_blocks": [],
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        self.batched, self.factor_linear = None, True  # defaults for older pickles
        self._key, self._blocks = None, []
        self.__dict__.update(state)

    def __repr__(self) -> str:
        shapes = [tuple(block.shape) for block in self._blocks]
        return (
            f"Engine(batched={self.batched}, factor_linear={self.factor_linear}, buffers={shapes})"
        )


class Jacobian:
    """Per-loss gradients over a list of tensors, one block of ``R`` rows per tensor.

    Row ``i`` is ``factors[i]`` times the gradient stored in the blocks; factors are applied
    lazily (see :meth:`scaled`). Gradient-level methods read :meth:`gramian` (``R x R``, enough
    for almost every method), combine rows with :meth:`combine`, and materialize the full
    ``(R, P)`` matrix with :meth:`matrix` only if they must. A block is stored row by row
    (:class:`~multiloss.balancing._blocks.DenseBlock`) or, for the weight of a linear layer, as
    the layer's inputs and output gradients (:class:`~multiloss.balancing._blocks.FactoredBlock`:
    its rows are never formed); :attr:`blocks` shows every block as ``(R, *shape)`` rows.

    Args:
        blocks: One block per input: a tensor of shape ``(R, *input.shape)``, or a block object.
        factors: ``(R,)`` multipliers of the rows (default: ones).

    Example:
        >>> import torch
        >>> jac = Jacobian([torch.tensor([[1.0, 0.0], [1.0, 1.0]])])
        >>> jac.gramian()
        tensor([[1., 1.],
                [1., 2.]])
        >>> jac.scaled(torch.tensor([2.0, 1.0])).combine(torch.tensor([0.5, 1.0]))
        [tensor([2., 1.])]
    """

    def __init__(self, blocks: Sequence[Tensor | Block], factors: Tensor | None = None) -> None:
        if not blocks:
            raise ValueError("a Jacobian needs at least one block")
        self.parts: list[Block] = [
            DenseBlock(block) if isinstance(block, Tensor) else block for block in blocks
        ]
        self.rows = self.parts[0].rows
        self.factors = (
            torch.ones(self.rows, dtype=torch.float32, device=self.parts[0].device)
            if factors is None
            else factors
        )
        self._raw_gramian: Tensor | None = None
        self._dense: list[Tensor] | None = None

    @property
    def blocks(self) -> list[Tensor]:
        """Every block as rows, ``(R, *input.shape)`` (factored blocks are formed on first use)."""
        if self._dense is None:
            self._dense = [part.dense() for part in self.parts]
        return self._dense

    @property
    def factored(self) -> bool:
        """Whether some block is kept as a linear layer's factors (rows not formed)."""
        return any(isinstance(part, FactoredBlock | FactoredInputBlock) for part in self.parts)

    def _kept_rows(self) -> list[RowsBlock] | None:
        """The blocks, when every one is kept as rows (reduced together); else ``None``."""
        parts = self.parts
        if all(isinstance(part, RowsBlock) for part in parts):
            return cast(list[RowsBlock], parts)
        return None

    # -- views ------------------------------------------------------------------------------------
    def scaled(self, factors: Tensor) -> Jacobian:
        """The same gradients with row ``i`` multiplied by ``factors[i]`` (no copy)."""
        view = Jacobian(self.parts, self.factors * factors.to(self.factors))
        view._raw_gramian = self._raw_gramian
        view._dense = self._dense
        return view

    def take(self, rows: Sequence[int] | slice) -> Jacobian:
        """A Jacobian of a subset of the rows (the selected rows of each block: a copy, except
        for rows kept as autograd returned them, which are shared)."""
        index = range(self.rows)[rows] if isinstance(rows, slice) else list(rows)
        if list(index) == list(range(self.rows)):
            return self
        idx = torch.as_tensor(list(index), device=self.factors.device)
        view = Jacobian(
            [part.select(idx) for part in self.parts], self.factors.index_select(0, idx)
        )
        if self._raw_gramian is not None:
            view._raw_gramian = self._raw_gramian.index_select(0, idx).index_select(1, idx)
        return view

    def select(self, positions: Sequence[int]) -> Jacobian:
        """The blocks at ``positions`` (columns of some of the tensors), same rows, no copy."""
        return Jacobian([self.parts[k] for k in positions], self.factors)

    def _flat(self) -> Tensor | None:
        """The ``(R, P)`` matrix whose consecutive column slices are the blocks, when they are
        views of one (the engine's buffers on the CPU, see ``_flat_blocks``); else ``None``."""
        base: Tensor | None = None
        offset = 0
        for part in self.parts:
            if not isinstance(part, DenseBlock):
                return None
            data = part.data
            if data._base is None or (base is not None and data._base is not base):
                return None
            base = data._base
            if (
                data.storage_offset() - base.storage_offset() != offset
                or data.stride(0) != base.stride(0)
                or not data[0].is_contiguous()
            ):
                return None
            offset += part.size()
        if (
            base is None
            or base.dim() != 2
            or tuple(base.shape) != (self.rows, offset)
            or not base.is_contiguous()
            or base.dtype not in (torch.float32, torch.float64)
        ):
            return None
        return base

    # -- reductions -------------------------------------------------------------------------------
    def raw_gramian(self) -> Tensor:
        """``B B^T`` of the stored blocks (without the factors), computed once, in float32."""
        if self._raw_gramian is None:
            flat = self._flat()
            if flat is not None:
                self._raw_gramian = gram_rows(flat).to(torch.float32)
                return self._raw_gramian
            kept = self._kept_rows()
            if kept is not None:
                self._raw_gramian = rows_gramian(kept)
                return self._raw_gramian
            gram = self.parts[0].gramian()
            for part in self.parts[1:]:
                gram = gram + part.gramian()
            self._raw_gramian = gram
        return self._raw_gramian

    def gramian(self) -> Tensor:
        """``J J^T`` (``R x R``): every inner product of two rows, factors applied."""
        factors = self.factors.to(torch.float32)
        return self.raw_gramian() * factors[:, None] * factors[None, :]

    def norms(self) -> Tensor:
        """The Euclidean norm of each row, ``(R,)`` (no Gramian needed: ``R`` times cheaper)."""
        if self._raw_gramian is not None:
            squares = self._raw_gramian.diagonal()
        else:
            squares = self.parts[0].squared_norms()
            for part in self.parts[1:]:
                squares = squares + part.squared_norms()
        return squares.clamp_min(0.0).sqrt() * self.factors.to(torch.float32).abs()

    def combine(self, coefficients: Tensor) -> list[Tensor]:
        """``sum_i coefficients[i] * J_i``, one tensor per block (shaped like the input)."""
        weights = coefficients.to(self.factors) * self.factors
        flat = self._flat()
        if flat is not None:
            sizes = [part.size() for part in self.parts]
            mixed = mix_rows(weights, flat).split(sizes)
            return [
                piece.view(part.dense().shape[1:])
                for piece, part in zip(mixed, self.parts, strict=True)
            ]
        kept = self._kept_rows()
        if kept is not None:
            return rows_combine(kept, weights)
        return [part.combine(weights) for part in self.parts]

    def dot(self, update: Sequence[Tensor]) -> Tensor:
        """``J u``: the inner product of each row with ``update`` (one tensor per block)."""
        total = self.parts[0].dot(update[0])
        for part, piece in zip(self.parts[1:], update[1:], strict=True):
            total = total + part.dot(piece)
        return total * self.factors.to(total)

    def matrix(self) -> Tensor:
        """The full ``(R, P)`` matrix, factors applied (a copy: use only when needed)."""
        flat = torch.cat([block.reshape(self.rows, -1) for block in self.blocks], dim=1)
        return flat * self.factors.to(flat)[:, None]

    def __repr__(self) -> str:
        sizes = sum(part.size() for part in self.parts)
        factored = sum(isinstance(part, FactoredBlock | FactoredInputBlock) for part in self.parts)
        extra = f", factored={factored}" if factored else ""
        return f"Jacobian(rows={self.rows}, blocks={len(self.parts)}, size={sizes}{extra})"
