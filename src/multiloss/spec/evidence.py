"""What an output is, read from the module that produced it or the autograd op that made it.

Evidence is gathered in this order, first match wins:

1. the producing module's own declaration: an ``automatic_loss()`` method, or an
   ``output_kind`` attribute (see :mod:`multiloss.spec.markers`);
2. the producing module's type: a loss module, ``nn.Softmax``/``Softmax2d``,
   ``nn.LogSoftmax``, ``nn.Sigmoid``, ``nn.PairwiseDistance``, ``nn.Linear``/``Bilinear``,
   ``nn.ConvNd``/``ConvTransposeNd``;
3. the autograd node of the tensor, for functional code (``F.softmax``, ``torch.sigmoid``,
   ``F.log_softmax``, a loss function such as ``F.mse_loss``) when gradients are on. Nodes
   that only reshape, move or copy (``squeeze``, ``view``, ``permute``, ``.float()``...) are
   looked through, so ``sigmoid(x).squeeze(1)`` is still read as probabilities; after one that
   moves dims, a softmax's class dim is inferred from the target instead of taken from the op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.loss import _Loss

from multiloss.losses import Loss
from multiloss.spec.markers import output_kind_of
from multiloss.spec.producers import Producer

__all__ = ["Evidence", "evidence_of"]

_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
# Autograd nodes of torch's fused loss kernels (losses that torch decomposes, such as l1_loss or
# cross-entropy with soft targets, leave a generic node and are caught by the scalar rule).
_LOSS_NODES = frozenset(
    {
        "NllLossBackward0",
        "NllLoss2DBackward0",
        "MseLossBackward0",
        "BinaryCrossEntropyBackward0",
        "BinaryCrossEntropyWithLogitsBackward0",
        "SmoothL1LossBackward0",
        "HuberLossBackward0",
        "SoftMarginLossBackward0",
        "MultiMarginLossBackward0",
        "MultilabelMarginLossBackward0",
    }
)
# Nodes that keep every value and its meaning: looked through, with the dims unchanged ...
_SAME_DIMS = frozenset({"CloneBackward0", "ToCopyBackward0", "AliasBackward0"})
# ... or with the dims moved (a softmax's class dim is then no longer known).
_MOVED_DIMS = frozenset(
    {
        "ViewBackward0",
        "UnsafeViewBackward0",
        "ReshapeAliasBackward0",
        "SqueezeBackward0",
        "SqueezeBackward1",
        "SqueezeBackward2",
        "UnsqueezeBackward0",
        "PermuteBackward0",
        "TransposeBackward0",
        "TBackward0",
    }
)
# How many such nodes to walk through before giving up.
_MAX_HOPS = 8
_OP_KINDS = {
    "SoftmaxBackward0": ("probabilities", "softmax"),
    "LogSoftmaxBackward0": ("log_probabilities", "log_softmax"),
    "SigmoidBackward0": ("binary_probabilities", "sigmoid"),
}


@dataclass(frozen=True)
class Evidence:
    """What ``Automatic`` knows about one output.

    Attributes:
        kind: One of ``multiloss.spec.OUTPUT_KINDS``, ``"custom"`` (the module names its loss
            with ``automatic_loss()``) or ``"unknown"``.
        class_dim: The class dimension, when the evidence says it.
        source: Where the evidence comes from, in words, for ``explain`` and errors.
        module: The producing module, if a module produced the output.
    """

    kind: str
    class_dim: int | None
    source: str
    module: nn.Module | None = None


def _legacy_softmax_dim(ndim: int) -> int:
    # nn.Softmax(dim=None): the implicit dimension of torch's legacy rule.
    return 0 if ndim in (0, 1, 3) else 1


def _module_evidence(module: nn.Module, value: Any, source: str) -> Evidence | None:
    if callable(getattr(module, "automatic_loss", None)):
        return Evidence("custom", None, f"{source}, which names its loss", module)
    kind = output_kind_of(module)
    if kind is not None:
        class_dim = getattr(module, "class_dim", None)
        if not isinstance(class_dim, int) or isinstance(class_dim, bool):
            class_dim = None
        return Evidence(kind, class_dim, f"{source}, declared output_kind={kind!r}", module)
    ndim = value.dim() if isinstance(value, Tensor) else 0
    if isinstance(module, _Loss | Loss):
        return Evidence("loss", None, f"{source}, a loss module", module)
    if isinstance(module, nn.Softmax2d):
        return Evidence("probabilities", -3, source, module)
    if isinstance(module, nn.Softmax | nn.LogSoftmax):
        dim = module.dim if module.dim is not None else _legacy_softmax_dim(ndim)
        kind = "probabilities" if isinstance(module, nn.Softmax) else "log_probabilities"
        return Evidence(kind, dim, source, module)
    if isinstance(module, nn.Sigmoid):
        return Evidence("binary_probabilities", None, source, module)
    if isinstance(module, nn.PairwiseDistance):
        return Evidence("pair_distance", None, source, module)
    if isinstance(module, nn.Linear | nn.Bilinear):
        return Evidence("logits", -1, f"{source}, a final linear layer", module)
    if isinstance(module, _CONV):
        return Evidence("logits", 1, f"{source}, a final convolution", module)
    return None


def _signed(dim: int) -> int:
    # Autograd stores dims as unsigned 64-bit integers: -1 reads as 2**64 - 1.
    return dim - 2**64 if dim >= 2**63 else dim


def _op_evidence(value: Any, where: str) -> Evidence | None:
    node = getattr(value, "grad_fn", None)
    passed: list[str] = []
    moved = False
    while node is not None and len(passed) <= _MAX_HOPS:
        name = type(node).__name__
        through = f", then {', '.join(passed)}" if passed else ""
        if name in _LOSS_NODES:
            return Evidence("loss", None, f"a loss op (autograd node {name}{through}) {where}")
        if name in _OP_KINDS:
            kind, op = _OP_KINDS[name]
            saved = getattr(node, "_saved_dim", None)
            dim = _signed(saved) if isinstance(saved, int) and not moved else None
            over = f" over dim {dim}" if dim is not None else ""
            return Evidence(kind, dim, f"op {op}{over} (autograd node {name}{through}) {where}")
        if name not in _SAME_DIMS and name not in _MOVED_DIMS:
            return None
        moved = moved or name in _MOVED_DIMS
        passed.insert(0, name.removesuffix("Backward0").removesuffix("Backward1").lower())
        inputs = node.next_functions
        node = inputs[0][0] if inputs else None
    return None


def evidence_of(value: Any, producer: Producer | None) -> Evidence:
    """The evidence about ``value``, an output port produced by ``producer`` (None: unknown)."""
    source = producer.describe() if producer is not None else "no module returned it"
    if producer is not None:
        found = _module_evidence(producer.module, value, source)
        if found is not None:
            return found
    where = f"in the forward of {source}" if producer is not None else "in the model's forward"
    found = _op_evidence(value, where)
    if found is not None:
        return found
    node = getattr(value, "grad_fn", None)
    if isinstance(value, Tensor) and node is not None:
        detail = f"its autograd node {type(node).__name__} has no rule"
    elif isinstance(value, Tensor):
        detail = "no autograd graph to read (gradients off or nothing trainable)"
    else:
        detail = "not a tensor"
    return Evidence("unknown", None, f"{source}; {detail}")
