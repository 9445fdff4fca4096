"""How a module tells ``Automatic`` what its output is.

A module can say it in two ways, both read only when it produces an output port:

* an ``output_kind`` attribute (class or instance) with one of :data:`OUTPUT_KINDS`, and
  optionally ``class_dim`` for the class-indexed kinds; :func:`mark_output` sets them on an
  existing instance;
* an ``automatic_loss()`` method returning the loss to attach, for anything the kinds do not
  cover (a margin of its own, a custom loss).
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from multiloss._validation import check_choice, check_int

__all__ = ["OUTPUT_KINDS", "mark_output", "output_kind_of"]

#: What an output can be declared to be, and the loss Automatic attaches to each
#: (see the rules table in docs/specs.md).
OUTPUT_KINDS = (
    "loss",
    "logits",
    "probabilities",
    "log_probabilities",
    "binary_logits",
    "binary_probabilities",
    "pair_distance",
    "pair_embeddings",
    "regression",
)

M = TypeVar("M", bound=nn.Module)


def mark_output(module: M, kind: str, *, class_dim: int | None = None) -> M:
    """Declare what ``module``'s output is, for ``Automatic``; returns ``module``.

    Args:
        module: The module whose output becomes a port.
        kind: One of :data:`OUTPUT_KINDS`.
        class_dim: For ``"logits"``, ``"probabilities"`` and ``"log_probabilities"``: the
            dimension that indexes the classes (default: inferred from the target's shape,
            preferring dim 1).

    Example:
        >>> import torch
        >>> head = mark_output(torch.nn.PairwiseDistance(), "pair_distance")
        >>> output_kind_of(head)
        'pair_distance'
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` of mark_output must be an nn.Module; got {type(module)}")
    # Plain attributes (not parameters, buffers or submodules): nothing enters the state_dict.
    object.__setattr__(
        module, "output_kind", check_choice(kind, "`kind` of mark_output", OUTPUT_KINDS)
    )
    if class_dim is not None:
        object.__setattr__(module, "class_dim", check_int(class_dim, "`class_dim` of mark_output"))
    return module


def output_kind_of(module: nn.Module) -> str | None:
    """The ``output_kind`` a module declares, validated; None if it declares none."""
    kind: object = getattr(module, "output_kind", None)
    if kind is None:
        return None
    return str(check_choice(kind, f"`output_kind` of {type(module).__name__}", OUTPUT_KINDS))
