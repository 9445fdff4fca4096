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

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Engine", "Jacobian", "per_loss_gradients"]


def _stack(outputs: Sequence[Tensor]) -> Tensor:
    first = outputs[0].dtype
    if any(output.dtype != first for output in outputs):  # bf16 and fp32 side by side
        return torch.stack([output.float().reshape(()) for output in outputs])
    if all(output.dim() == 0 for output in outputs):
        return torch.stack(list(outputs))
    return torch.stack([output.reshape(()) for output in outputs])


def _empty_blocks(rows: int, inputs: Sequence[Tensor]) -> list[Tensor]:
    return [torch.empty((rows, *t.shape), dtype=t.dtype, device=t.device) for t in inputs]


def _loop(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_scale: float | Tensor,
    retain_graph: bool,
    out: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    # Each gradient is copied into its row as soon as it exists, so the peak is the blocks
    # plus one gradient, not twice the blocks (a list of rows, then a stacked copy).
    rows = len(outputs)
    blocks = list(out) if out is not None else _empty_blocks(rows, inputs)
    last = rows - 1
    unscaled = isinstance(grad_scale, float) and grad_scale == 1.0
    for index, output in enumerate(outputs):
        if not output.requires_grad:
            for block in blocks:
                block[index].zero_()
            continue
        grads = torch.autograd.grad(
            output,
            list(inputs),
            grad_outputs=None if unscaled else torch.ones_like(output) * grad_scale,
            retain_graph=retain_graph or index < last,
            allow_unused=True,
            materialize_grads=True,
        )
        for block, grad in zip(blocks, grads, strict=True):
            block[index].copy_(grad)
        del grads
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
    if not outputs or not inputs:
        raise ValueError(
            f"per_loss_gradients needs at least one output and one input; got {len(outputs)} "
            f"outputs and {len(inputs)} inputs"
        )
    if not any(output.requires_grad for output in outputs):
        zeros = [
            torch.zeros((len(outputs), *t.shape), dtype=t.dtype, device=t.device) for t in inputs
        ]
        return zeros, batched
    if batched and len(outputs) > 1:
        stacked = _stack(outputs)
        eye = torch.eye(len(outputs), dtype=stacked.dtype, device=stacked.device)
        if not (isinstance(grad_scale, float) and grad_scale == 1.0):
            eye = eye * grad_scale
        try:
            # Keep the graph if the caller asked, or if a failure half-way (an op without a
            # batching rule) would otherwise leave nothing for the loop to fall back on.
            grads = torch.autograd.grad(
                stacked,
                list(inputs),
                grad_outputs=eye,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
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
            return _loop(outputs, inputs, grad_scale, retain_graph, out), False
        # An input no loss depends on comes back as unbatched zeros: give it its rows.
        rows = len(outputs)
        blocks = [
            g if g.shape[:1] == (rows,) and g.dim() == t.dim() + 1 else g.expand(rows, *t.shape)
            for g, t in zip(grads, inputs, strict=True)
        ]
        return blocks, True
    return _loop(outputs, inputs, grad_scale, retain_graph, out), batched


class Engine:
    """How a balancer computes its per-loss gradients, remembered from one call to the next.

    * ``batched``: ``None`` until something is known (then the device decides: the batched
      pass on accelerators, the loop on the CPU, where ``R`` plain backward passes are faster),
      ``False`` once a batched pass failed (an operation without a batching rule), so the
      failure is not retried at every step.
    * :meth:`buffers`: the loop's output blocks on the CPU, kept for the next call with the same
      shapes (one set at a time). They are overwritten by that call: a method that keeps
      per-loss gradients past its step must copy them.

    Example:
        >>> import torch
        >>> engine = Engine()
        >>> w = torch.zeros(3, requires_grad=True)
        >>> first = engine.buffers(2, [w])
        >>> first[0].shape, engine.buffers(2, [w])[0] is first[0]
        (torch.Size([2, 3]), True)
        >>> engine
        Engine(batched=None, buffers=[(2, 3)])
    """

    def __init__(self) -> None:
        self.batched: bool | None = None
        self._key: tuple[object, ...] | None = None
        self._blocks: list[Tensor] = []

    def use_batched(self, device: torch.device) -> bool:
        """Whether to try the batched pass for outputs on ``device``."""
        return self.batched if self.batched is not None else device.type != "cpu"

    def buffers(self, rows: int, inputs: Sequence[Tensor]) -> list[Tensor] | None:
        """Reusable ``(rows, *input.shape)`` blocks for CPU inputs; ``None`` elsewhere (the
        CUDA caching allocator already recycles memory, and held buffers would only take
        space from the next forward pass)."""
        if not inputs or any(t.device.type != "cpu" for t in inputs):
            return None
        key = (rows, *((tuple(t.shape), t.dtype) for t in inputs))
        if key != self._key:
            self._blocks = []  # free the old set before allocating the new one
            self._blocks = _empty_blocks(rows, inputs)
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
        return copy

    def __getstate__(self) -> dict[str, object]:
        return {"batched": self.batched, "_key": None, "_blocks": []}

    def __repr__(self) -> str:
        shapes = [tuple(block.shape) for block in self._blocks]
        return f"Engine(batched={self.batched}, buffers={shapes})"


class Jacobian:
    """Per-loss gradients over a list of tensors, one ``(R, *shape)`` block per tensor.

    Row ``i`` is ``factors[i]`` times the gradient stored in the blocks; factors are applied
    lazily (see :meth:`scaled`). Gradient-level methods read :meth:`gramian` (``R x R``, enough
    for almost every method), combine rows with :meth:`combine`, and materialize the full
    ``(R, P)`` matrix with :meth:`matrix` only if they must.

    Args:
        blocks: One tensor per input, of shape ``(R, *input.shape)``.
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

    def __init__(self, blocks: Sequence[Tensor], factors: Tensor | None = None) -> None:
        if not blocks:
            raise ValueError("a Jacobian needs at least one block")
        self.blocks = list(blocks)
        self.rows = int(self.blocks[0].shape[0])
        first = self.blocks[0]
        self.factors = (
            torch.ones(self.rows, dtype=torch.float32, device=first.device)
            if factors is None
            else factors
        )
        self._raw_gramian: Tensor | None = None

    # -- views ------------------------------------------------------------------------------------
    def scaled(self, factors: Tensor) -> Jacobian:
        """The same gradients with row ``i`` multiplied by ``factors[i]`` (no copy)."""
        view = Jacobian(self.blocks, self.factors * factors.to(self.factors))
        view._raw_gramian = self._raw_gramian
        return view

    def take(self, rows: Sequence[int] | slice) -> Jacobian:
        """A Jacobian of a subset of the rows (copies the selected rows of each block)."""
        index = range(self.rows)[rows] if isinstance(rows, slice) else list(rows)
        if list(index) == list(range(self.rows)):
            return self
        idx = torch.as_tensor(list(index), device=self.factors.device)
        view = Jacobian(
            [block.index_select(0, idx.to(block.device)) for block in self.blocks],
            self.factors.index_select(0, idx),
        )
        if self._raw_gramian is not None:
            view._raw_gramian = self._raw_gramian.index_select(0, idx).index_select(1, idx)
        return view

    # -- reductions -------------------------------------------------------------------------------
    def raw_gramian(self) -> Tensor:
        """``B B^T`` of the stored blocks (without the factors), computed once, in float32."""
        if self._raw_gramian is None:
            gram = torch.zeros(
                (self.rows, self.rows), dtype=torch.float32, device=self.factors.device
            )
            for block in self.blocks:
                flat = block.reshape(self.rows, -1)
                if flat.dtype not in (torch.float32, torch.float64):
                    flat = flat.float()
                gram = gram + (flat @ flat.T).to(gram)
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
            squares = torch.zeros(self.rows, dtype=torch.float32, device=self.factors.device)
            for block in self.blocks:
                flat = block.reshape(self.rows, -1)
                squares = squares + torch.linalg.vector_norm(flat, dim=1, dtype=torch.float32) ** 2
        return squares.clamp_min(0.0).sqrt() * self.factors.to(torch.float32).abs()

    def combine(self, coefficients: Tensor) -> list[Tensor]:
        """``sum_i coefficients[i] * J_i``, one tensor per block (shaped like the input)."""
        weights = coefficients.to(self.factors) * self.factors
        out: list[Tensor] = []
        for block in self.blocks:
            flat = block.reshape(self.rows, -1)
            out.append((weights.to(flat.dtype) @ flat).reshape(block.shape[1:]))
        return out

    def dot(self, update: Sequence[Tensor]) -> Tensor:
        """``J u``: the inner product of each row with ``update`` (one tensor per block)."""
        total = torch.zeros(self.rows, dtype=torch.float32, device=self.factors.device)
        for block, part in zip(self.blocks, update, strict=True):
            flat = block.reshape(self.rows, -1)
            total = total + (flat @ part.reshape(-1).to(flat.dtype)).to(total)
        return total * self.factors.to(total)

    def matrix(self) -> Tensor:
        """The full ``(R, P)`` matrix, factors applied (a copy: use only when needed)."""
        flat = torch.cat([block.reshape(self.rows, -1) for block in self.blocks], dim=1)
        return flat * self.factors.to(flat)[:, None]

    def __repr__(self) -> str:
        sizes = sum(int(block[0].numel()) for block in self.blocks)
        return f"Jacobian(rows={self.rows}, blocks={len(self.blocks)}, size={sizes})"
