"""The rules of ``Automatic``: from what an output is and what its target looks like, a loss.

The table in ``docs/specs.md`` is this file in words. Each rule has a short id (``rule``)
that ``explain`` prints next to the reason and tests assert on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multiloss.losses import (
    NLL,
    BinaryCrossEntropy,
    Contrastive,
    CrossEntropy,
    MeanSquared,
)
from multiloss.losses.base import describe_tensor
from multiloss.spec.errors import AutomaticError, MissingKeyError
from multiloss.spec.evidence import Evidence, evidence_of
from multiloss.spec.markers import OUTPUT_KINDS
from multiloss.spec.producers import Producer

__all__ = ["Choice", "choose"]


@dataclass(frozen=True)
class Choice:
    """The loss ``Automatic`` chose for one port (None: the output already is a loss)."""

    loss: Callable[..., Any] | None
    rule: str
    reason: str


def _is_integer(target: Tensor) -> bool:
    return not (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool)


def _aligned(shape: torch.Size, target_shape: torch.Size) -> bool:
    """Equal shapes, or shapes that differ by one trailing dimension of size 1."""
    if shape == target_shape:
        return True
    longer, shorter = (
        (shape, target_shape)
        if len(shape) > len(target_shape)
        else (
            target_shape,
            shape,
        )
    )
    return len(longer) == len(shorter) + 1 and longer[-1] == 1 and longer[:-1] == shorter


def _index_dim(shape: torch.Size, target_shape: torch.Size, preferred: int | None) -> int | None:
    """The dim whose removal from ``shape`` gives ``target_shape`` (class indices), or None.

    Several can fit (a ``(4, 4)`` output against ``(4,)`` targets): the evidence's class dim
    wins, then torch's convention (dim 1), then the last one.
    """
    ndim = len(shape)
    fits = [d for d in range(ndim) if shape[:d] + shape[d + 1 :] == target_shape]
    if not fits:
        return None
    if preferred is not None and -ndim <= preferred < ndim and preferred % ndim in fits:
        return preferred
    return 1 if 1 in fits else fits[-1]


def _missing_target(port: str, data: Mapping[str, Any], evidence: Evidence) -> MissingKeyError:
    return MissingKeyError(
        f"Automatic needs a target for port {port!r} ({evidence.source}), but the batch has "
        f"no entry {port!r}; its keys are {sorted(data)}. Add the target to the batch under "
        f"{port!r}, use Port({port!r}) if the output already is a loss, or "
        f"Attach({port!r}, loss, target='<key>')"
    )


def _cannot_choose(port: str, value: Any, target: Any, evidence: Evidence) -> AutomaticError:
    return AutomaticError(
        f"Automatic cannot choose a loss for port {port!r}: the output ({describe_tensor(value)}"
        f") comes from {evidence.source}, which no rule classifies, and the target "
        f"batch[{port!r}] ({describe_tensor(target)}) is neither class indices for it nor of "
        f"its shape. Attach a loss explicitly, e.g. Attach({port!r}, MeanSquared()), or "
        f"declare the module's output with multiloss.spec.mark_output(module, kind), kind in "
        f"{set(OUTPUT_KINDS)}"
    )


def choose(port: str, value: Any, data: Mapping[str, Any], producer: Producer | None) -> Choice:
    """The loss for output ``port`` holding ``value``, given the batch ``data``.

    Raises:
        MissingKeyError: The output needs a target and the batch has none.
        AutomaticError: No rule fits the output and its target.
    """
    evidence = evidence_of(value, producer)
    source = evidence.source
    if evidence.kind == "custom":
        loss = getattr(evidence.module, "automatic_loss")()  # noqa: B009 (checked callable)
        if not callable(loss):
            raise TypeError(
                f"automatic_loss() of {type(evidence.module).__name__} must return a loss "
                f"module or function; got {loss!r}"
            )
        return Choice(loss, "automatic_loss", f"{source} with automatic_loss()")
    if evidence.kind == "loss":
        return Choice(None, "loss", f"the output comes from {source}: used as the loss")
    if port not in data:
        if isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point():
            return Choice(
                None,
                "scalar_output",
                f"a scalar output ({source}) with no target in the batch: used as the loss",
            )
        raise _missing_target(port, data, evidence)
    target = data[port]
    if not isinstance(target, Tensor):
        raise AutomaticError(
            f"Automatic cannot read the target of port {port!r}: batch[{port!r}] is "
            f"{describe_tensor(target)}, not a tensor. Convert it to a tensor in the data "
            f"loader, or Attach({port!r}, loss) with a loss that reads it"
        )
    choice = _by_kind(port, value, target, evidence)
    if choice is not None:
        return choice
    return _fallback(port, value, target, evidence)


def _by_kind(port: str, value: Any, target: Tensor, evidence: Evidence) -> Choice | None:
    kind, source, dim = evidence.kind, evidence.source, evidence.class_dim
    seen = f"the target ({describe_tensor(target)})"
    if kind in ("probabilities", "log_probabilities"):
        prefix = "probabilities" if kind == "probabilities" else "log-probabilities"
        if isinstance(value, Tensor) and _is_integer(target):
            index = _index_dim(value.shape, target.shape, dim)
            class_dim = index if index is not None else (dim if dim is not None else 1)
            loss: Callable[..., Any] = (
                CrossEntropy(input="probabilities", target="index", class_dim=class_dim)
                if kind == "probabilities"
                else NLL(class_dim=class_dim)
            )
            reason = f"{source} gives {prefix} over dim {class_dim}; {seen} holds class indices"
            return Choice(loss, f"{kind}/index", reason)
        class_dim = dim if dim is not None else 1
        loss = CrossEntropy(input=kind, target="probabilities", class_dim=class_dim)
        reason = f"{source} gives {prefix} over dim {class_dim}; {seen} is a distribution"
        return Choice(loss, f"{kind}/distribution", reason)
    if kind in ("binary_probabilities", "binary_logits"):
        input_kind = "probabilities" if kind == "binary_probabilities" else "logits"
        reason = f"{source} gives independent yes/no {input_kind}; {seen} holds the labels"
        return Choice(BinaryCrossEntropy(input=input_kind), kind, reason)
    if kind in ("pair_distance", "pair_embeddings"):
        what = "a distance per pair" if kind == "pair_distance" else "embeddings of pairs"
        loss = Contrastive(input="distance" if kind == "pair_distance" else "embeddings")
        return Choice(loss, kind, f"{source} gives {what}; {seen} says which pairs are similar")
    if kind == "regression":
        return Choice(MeanSquared(), kind, f"{source} is a regression output")
    if kind == "logits" and isinstance(value, Tensor):
        return _logits(value, target, evidence)
    return None


def _logits(value: Tensor, target: Tensor, evidence: Evidence) -> Choice | None:
    source = evidence.source
    seen = f"the target ({describe_tensor(target)})"
    if _is_integer(target):
        index = _index_dim(value.shape, target.shape, evidence.class_dim)
        if index is not None and value.shape[index] > 1:
            reason = f"{source} gives logits over dim {index}; {seen} holds class indices"
            return Choice(CrossEntropy(class_dim=index), "logits/index", reason)
        if value.dim() >= 1 and value.shape[-1] == 1 and _aligned(value.shape, target.shape):
            reason = f"{source} gives one logit per example; {seen} holds 0/1 labels"
            return Choice(BinaryCrossEntropy(input="logits"), "logits/binary", reason)
    if target.dtype == torch.bool and _aligned(value.shape, target.shape):
        reason = f"{source} gives logits; {seen} holds yes/no labels, one per logit"
        return Choice(BinaryCrossEntropy(input="logits"), "logits/multilabel", reason)
    return None


def _fallback(port: str, value: Any, target: Tensor, evidence: Evidence) -> Choice:
    if not (isinstance(value, Tensor) and value.is_floating_point()):
        raise _cannot_choose(port, value, target, evidence)
    seen = f"the target ({describe_tensor(target)})"
    if _is_integer(target):
        index = _index_dim(value.shape, target.shape, None)
        if index is not None and value.shape[index] > 1:
            reason = (
                f"the output comes from {evidence.source}; {seen} holds class indices over its "
                f"dim {index}, so the output is read as logits"
            )
            return Choice(CrossEntropy(class_dim=index), "index_target", reason)
    if _aligned(value.shape, target.shape):
        reason = f"the output comes from {evidence.source}; {seen} has its shape"
        return Choice(MeanSquared(), "same_shape", reason)
    raise _cannot_choose(port, value, target, evidence)
