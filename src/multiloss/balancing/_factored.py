"""Which shared weights are linear layers, so their per-loss gradients can stay factored.

The gradient of a weight ``W`` used as ``Y = X W^T`` (``nn.Linear``) is ``dY^T X``. When every use
of ``W`` in the graph is such a product, the per-loss backward passes only need ``dY_i``, the
gradient with respect to the layer's output (``torch.autograd.grad`` stops there when asked for a
``GradientEdge``, and skips ``W``'s own ``R N in out`` product), and the Jacobian keeps the block
as ``(X, dY)`` (:class:`~multiloss.balancing._blocks.FactoredBlock`).

The layers are read off the autograd graph the balancer walks anyway (``shared.discover``): a
weight qualifies when every path from its ``AccumulateGrad`` node up to an operation goes through
casts (``ToCopyBackward0``, autocast) and transposes (``t``, ``T``, ``transpose``) only, and
ends in the right-hand operand of an ``addmm`` (with ``alpha = 1``) or ``mm``. Anything else (an
embedding, a convolution, a weight also used elsewhere, a compiled graph that shows no such
node, saved tensors that cannot be read, a weight with gradient hooks) keeps the ordinary dense
block: the result is the same, only the cost differs. Hooks on a layer's output tensor are
honoured: the per-loss loop reads the gradient the layer's node receives, after them. Only the
loop engine uses factored blocks (see ``context._Session._gradients``).

Whether factoring pays is a multiply-add count per layer (``worth_factoring``): the Gramian costs
``N^2 (in + R out)`` factored against the ``R N in out`` of forming the rows, so it pays when the
batch ``N`` (rows of ``X``: examples, or tokens) is smaller than about the layer's width.

The representation level has the mirror case (``find_factored_input``): a representation ``z``
read only by linear heads has per-loss gradients ``dY_i W`` (the heads' output gradients times
their weights), kept as ``(dY, W)`` when the heads have fewer outputs than ``z`` has features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge

from multiloss.balancing._blocks import Block, FactoredBlock, FactoredInputBlock
from multiloss.balancing._jacobian import Target
from multiloss.balancing._walk import edges_into
from multiloss.balancing.shared import GraphInfo

__all__ = [
    "Factored",
    "FactoredInput",
    "FactoredWeight",
    "LinearUse",
    "assemble",
    "factored_targets",
    "find_factored",
    "find_factored_input",
    "has_grad_hooks",
    "worth_factoring",
]

_CASTS = frozenset({"ToCopyBackward0"})


def _transposes(node: Any, kind: str) -> bool | None:
    """Whether a node on a 2-D weight's path transposes it (``w.t()``, ``w.T``,
    ``w.transpose(0, 1)``, ``w.permute(1, 0)``); ``None``: not a transpose node."""
    if kind == "TBackward0":
        return True
    if kind == "PermuteBackward0":
        return [int(d) % 2 for d in node._saved_dims] == [1, 0]
    if kind == "TransposeBackward0":
        return int(node._saved_dim0) % 2 != int(node._saved_dim1) % 2
    return None


@dataclass(frozen=True)
class LinearUse:
    """One product ``Y = X M`` in which ``M`` is the weight (or its transpose).

    Attributes:
        edge: Where ``dY`` enters the graph (the gradient with respect to ``Y``).
        inputs: ``X``, ``(N, in)``, detached.
        out_features: Columns of ``Y``.
        owner: The one loss (by position) whose graph reaches ``Y``, when only one does (a
            head read by a single loss); ``None``: several, or not known.
    """

    edge: GradientEdge
    inputs: Tensor
    out_features: int
    owner: int | None = None

    @property
    def shape(self) -> torch.Size:
        """The shape of ``dY``."""
        return torch.Size((int(self.inputs.shape[0]), self.out_features))


@dataclass(frozen=True)
class FactoredWeight:
    """A shared weight all of whose uses are linear products.

    Attributes:
        weight: The parameter.
        uses: Each product it enters (several when a layer is applied more than once).
        transposed: ``Y = X W^T`` (``W`` is ``out x in``, as in ``nn.Linear``); else ``Y = X W``.
    """

    weight: Tensor
    uses: tuple[LinearUse, ...]
    transposed: bool

    @property
    def examples(self) -> int:
        """``N``: rows of ``X`` over every use."""
        return sum(int(use.inputs.shape[0]) for use in self.uses)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the output gradients are kept in (float32 at least)."""
        return torch.promote_types(self.weight.dtype, torch.float32)

    def block(self, grads: Sequence[Tensor]) -> FactoredBlock:
        """The block from the output gradients of each use, each ``(R, N_k, out)``."""
        inputs = [use.inputs for use in self.uses]
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
        dy = grads[0] if len(grads) == 1 else torch.cat(list(grads), dim=1)
        return FactoredBlock(x, dy, transposed=self.transposed)


def worth_factoring(
    rows: int, examples: int, fan_in: int, fan_out: int, *, update: bool = True
) -> bool:
    """Whether the factored block costs fewer multiply-adds than the dense one.

    Factored: ``X X^T`` (``N^2 in``), ``(X X^T) dY_i`` for every row (``R N^2 out``), and, when
    the update is built from the block (``update``), the final ``dY^T X`` (``N in out``).
    Dense: the ``R`` weight gradients the backward passes form (``R N in out``). The dense
    block's extra passes over memory (the copy into the Jacobian, its Gramian) are not
    counted, which favours it slightly. Without the update (rows read only for their norms
    or Gramian, e.g. GradNorm's last layer) factoring pays from two rows on.

    Example:
        >>> worth_factoring(rows=8, examples=256, fan_in=512, fan_out=512)
        True
        >>> worth_factoring(rows=8, examples=4096, fan_in=512, fan_out=512)  # long sequences
        False
        >>> worth_factoring(rows=2, examples=256, fan_in=512, fan_out=512)
        False
        >>> worth_factoring(rows=2, examples=256, fan_in=512, fan_out=512, update=False)
        True
    """
    factored = examples * examples * (fan_in + rows * fan_out)
    if update:
        factored += examples * fan_in * fan_out
    return factored < rows * examples * fan_in * fan_out


def has_grad_hooks(tensor: Tensor) -> bool:
    """Whether ``tensor`` has gradient hooks (``register_hook``): they transform its gradient,
    which the factored rows never pass through, so such a tensor keeps dense rows (and a head
    with hooks gets its gradient from its own backward pass, see ``context``)."""
    return bool(getattr(tensor, "_backward_hooks", None))


def _saved_input(node: Any, name: str) -> Tensor | None:
    try:
        value = getattr(node, name)
    except (RuntimeError, AttributeError):  # freed, or behind a saved-tensor hook that fails
        return None
    return value.detach() if isinstance(value, Tensor) and value.dim() == 2 else None


def _linear_uses(weight: Tensor, graph: GraphInfo) -> tuple[list[LinearUse], bool] | None:
    """Every product ``weight`` enters, and its orientation; ``None`` if some use is another op."""
    start = graph.accumulators.get(id(weight))
    if start is None:
        return None
    uses: list[LinearUse] = []
    orientations: set[bool] = set()
    stack: list[tuple[Any, bool]] = [(start, False)]
    while stack:
        node, transposed = stack.pop()
        edges = graph.parents.get(node, [])
        if not edges:
            return None
        for parent, position in edges:
            kind = type(parent).__name__
            if kind in _CASTS:
                stack.append((parent, transposed))
                continue
            flips = _transposes(parent, kind)
            if flips is not None:
                stack.append((parent, transposed != flips))
                continue
            if kind == "AddmmBackward0" and position == 2 and parent._saved_alpha == 1:
                x = _saved_input(parent, "_saved_mat1")
            elif kind == "MmBackward0" and position == 1:
                x = _saved_input(parent, "_saved_self")
            else:
                return None
            if x is None or x.device != weight.device:
                return None
            out_features = weight.shape[0] if transposed else weight.shape[1]
            uses.append(LinearUse(GradientEdge(parent, 0), x, int(out_features)))
            orientations.add(transposed)
    if len(orientations) != 1:
        return None
    return uses, orientations.pop()


def find_factored(
    graph: GraphInfo, tensors: Sequence[Tensor], rows: int, *, update: bool = True
) -> dict[int, FactoredWeight]:
    """The weights among ``tensors`` worth keeping factored, by ``id``.

    Args:
        graph: The walk of this step's losses (with ``accumulators`` and ``parents``).
        tensors: The tensors the Jacobian is taken over.
        rows: ``R``, the number of per-loss gradients.
        update: Whether the update is built from these rows (see :func:`worth_factoring`).
    """
    found: dict[int, FactoredWeight] = {}
    for tensor in tensors:
        if tensor.dim() != 2 or not tensor.is_leaf or has_grad_hooks(tensor):
            continue
        result = _linear_uses(tensor, graph)
        if result is None:
            continue
        uses, transposed = result
        weight = FactoredWeight(tensor, tuple(uses), transposed)
        first, second = int(tensor.shape[0]), int(tensor.shape[1])
        fan_out, fan_in = (first, second) if transposed else (second, first)
        if worth_factoring(rows, weight.examples, fan_in, fan_out, update=update):
            found[id(tensor)] = weight
    return found


@dataclass(frozen=True)
class FactoredInput:
    """A representation ``z`` whose every use is the input of a linear layer (a head).

    Attributes:
        uses: Each product ``Y_u = z M_u`` (``inputs`` is ``z`` itself).
        weights: The heads' weights stacked, ``(O, d)`` (row block ``u`` is ``M_u^T``).
    """

    uses: tuple[LinearUse, ...]
    weights: Tensor

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the output gradients are kept in (float32 at least)."""
        return torch.promote_types(self.weights.dtype, torch.float32)

    def block(self, grads: Sequence[Tensor]) -> FactoredInputBlock:
        """The block from the output gradients of each use, each ``(R, N, out_u)``."""
        dy = grads[0] if len(grads) == 1 else torch.cat(list(grads), dim=2)
        return FactoredInputBlock(dy, self.weights)


def find_factored_input(roots: Sequence[Tensor], z: Tensor) -> FactoredInput | None:
    """The linear layers that read ``z``, if they are its only uses and factoring pays.

    ``z`` qualifies when it is 2-D, produced by an operation (not a leaf), and every edge into
    it from the losses' graph is the left operand of an ``addmm`` (``alpha = 1``) or ``mm``:
    ``nn.Linear`` heads on the trunk's output. It pays when the heads have fewer outputs in
    all (``O``) than ``z`` has features (``d``): the Gramian then costs ``R N O^2``, not
    ``R N d`` per pair of rows, and no ``N x d`` row is formed. The rows are the losses' own
    gradients at ``z``, before any hook on ``z`` (the balancer applies such hooks to the
    update, see ``context._Session._gradients``). Each loss's graph is walked
    on its own, so a head read by one loss only records it as its ``owner`` (then one backward
    pass gives every loss's head gradients, see ``_jacobian._disjoint``).
    """
    if z.dim() != 2:
        return None
    owners = edges_into(roots, z)
    if owners is None:
        return None
    heads: dict[tuple[Any, int], Tensor] = {}
    for key in owners:
        mat2 = _head_weight(key[0], key[1], z)
        if mat2 is None:
            return None
        heads[key] = mat2
    if not heads:
        return None
    uses = tuple(
        LinearUse(GradientEdge(key[0], 0), z, int(mat2.shape[1]), owners[key])
        for key, mat2 in heads.items()
    )
    blocks = [mat2.T for mat2 in heads.values()]
    weights = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    if weights.shape[0] >= z.shape[1]:  # O >= d: the rows are no bigger than the factors
        return None
    return FactoredInput(uses, weights)


def _head_weight(node: Any, position: int, z: Tensor) -> Tensor | None:
    """``M`` of a product ``z M`` that ``node`` computes with ``z`` as operand ``position``;
    ``None`` if the node is not such a product."""
    kind = type(node).__name__
    addmm = kind == "AddmmBackward0" and position == 1 and node._saved_alpha == 1
    if not (addmm or (kind == "MmBackward0" and position == 0)):
        return None
    mat2 = _saved_input(node, "_saved_mat2")
    if mat2 is None or mat2.shape[0] != z.shape[1] or mat2.device != z.device:
        return None
    return mat2


Factored = FactoredWeight | FactoredInput


def factored_targets(
    inputs: Sequence[Tensor], factored: Mapping[int, Factored]
) -> tuple[list[Target], list[int]]:
    """What the per-loss backward passes differentiate: each tensor itself, or, for a factored
    one, the output of each layer that uses it (gradients kept in float32 at least); and how
    many targets each input took (for :func:`assemble`)."""
    targets: list[Target] = []
    spans: list[int] = []
    for tensor in inputs:
        found = factored.get(id(tensor))
        if found is None:
            targets.append(Target.of(tensor))
            spans.append(1)
        else:
            targets += [
                Target(u.edge, u.shape, found.dtype, tensor.device, u.owner) for u in found.uses
            ]
            spans.append(len(found.uses))
    return targets, spans


def assemble(
    inputs: Sequence[Tensor],
    factored: Mapping[int, Factored],
    blocks: Sequence[Tensor],
    spans: Sequence[int],
) -> list[Tensor | Block]:
    """One Jacobian block per input from the targets' gradients (:func:`factored_targets`)."""
    parts: list[Tensor | Block] = []
    position = 0
    for tensor, span in zip(inputs, spans, strict=True):
        chunk = blocks[position : position + span]
        position += span
        found = factored.get(id(tensor))
        parts.append(chunk[0] if found is None else found.block(chunk))
    return parts
