"""Calling a model on a batch, and turning what it returns into named losses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import describe
from multiloss.collect import LossBook
from multiloss.outputs import NamedLosses

__all__ = ["batch_size", "call_model", "merge_output", "to_device"]

ForwardFn = Callable[[nn.Module, Any], Any]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other values pass through."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({key: to_device(value, device) for key, value in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(to_device(value, device) for value in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def batch_size(batch: Any) -> int:
    """Examples in a batch: the length of its first tensor (1 if it has none)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, list | tuple) or isinstance(batch, Mapping):
        for value in values:
            if isinstance(value, Tensor) and value.dim():
                return int(value.shape[0])
    return 1


def call_model(model: nn.Module, batch: Any, forward: ForwardFn | None, whole: bool) -> Any:
    """Run the model on a batch.

    ``forward(model, batch)`` if given; the whole batch when ``whole`` (a spec's training net
    takes the batch as is); otherwise a dict is spread as keyword arguments, a tuple or list as
    positional arguments, and anything else passed as the one argument.
    """
    if forward is not None:
        return forward(model, batch)
    if whole:
        return model(batch)
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, list | tuple):
        return model(*batch)
    return model(batch)


_HOW = (
    "In training the model must return a scalar loss tensor, a dict of named scalar losses "
    "(or multiloss.NamedLosses), or nothing if it emits its losses with multiloss.add_loss; "
    "for a model that returns predictions, pass losses=<spec> to the Trainer"
)


def merge_output(book: LossBook, output: Any) -> None:
    """Add the losses a model returned to the step's book (raw values, with their weights).

    Raises:
        TypeError: The output is neither a tensor, a mapping nor None.
        ValueError: A tensor that is not a scalar, a dict value that is not a scalar tensor,
            an empty dict, or no loss at all.
    """
    if output is None:
        if len(book) == 0:
            raise ValueError(f"the model returned None and emitted no loss. {_HOW}")
        return
    if isinstance(output, Tensor):
        if output.numel() != 1:
            raise ValueError(
                f"the model returned a tensor of shape {tuple(output.shape)}, not a scalar "
                f"loss. {_HOW}"
            )
        book.add("loss", output)
        return
    if isinstance(output, Mapping):
        if not output:
            raise ValueError(f"the model returned an empty dict. {_HOW}")
        for name, value in output.items():
            if not isinstance(name, str) or not name.strip():
                error = TypeError if not isinstance(name, str) else ValueError
                raise error(
                    f"the model returned a dict with the key {describe(name)}; loss names must "
                    "be non-empty strings"
                )
            if not isinstance(value, Tensor) or value.numel() != 1:
                hint = (
                    "; if it carries its loss under 'loss' (a Hugging Face style output), pass "
                    "forward=lambda model, batch: model(**batch).loss or return only the losses"
                    if "loss" in output
                    else ""
                )
                raise ValueError(
                    f"the model returned a dict whose value {name!r} is {describe(value)}, not "
                    f"a scalar loss tensor. {_HOW}{hint}"
                )
        weights = output.weights if isinstance(output, NamedLosses) else {}
        for name, value in output.items():
            book.add(name, value, weight=weights.get(name, 1.0))
        return
    raise TypeError(f"the model returned {describe(output)}. {_HOW}")
