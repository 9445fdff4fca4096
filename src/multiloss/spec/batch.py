"""Reading a batch: the dict view of it, the model's inputs, and a port's target.

A batch is a dict, or a pair ``(inputs, targets)`` (what a ``TensorDataset`` yields) read as
``{"input": inputs, "output": targets}``. When ``targets`` is itself a dict its entries are
added by name (targets for a dict-output model); when it is a tuple or list they are also added
as ``"output0"``, ``"output1"``, ... (targets for a tuple-output model).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from multiloss._modules import unwrap
from multiloss._validation import describe
from multiloss.spec.errors import MissingKeyError

__all__ = ["call_model", "read_batch"]

Inputs = str | Sequence[str] | None


def read_batch(batch: Any) -> dict[str, Any]:
    """The batch as a dict of named entries (see the module docstring).

    Example:
        >>> sorted(read_batch((1, {"class": 2, "depth": 3})))
        ['class', 'depth', 'input']
    """
    if isinstance(batch, Mapping):
        bad = [key for key in batch if not isinstance(key, str)]
        if bad:
            raise TypeError(f"the keys of a batch dict must be strings; got {bad[:5]}")
        return dict(batch)
    if isinstance(batch, list | tuple) and len(batch) == 2:
        inputs, targets = batch
        data: dict[str, Any] = {"input": inputs}
        if isinstance(targets, Mapping):
            data.update(read_batch(targets))
        else:
            data["output"] = targets
            if isinstance(targets, list | tuple):
                data.update((f"output{i}", target) for i, target in enumerate(targets))
        return data
    raise TypeError(
        "a batch must be a dict of named entries or a pair (inputs, targets); got "
        f"{_describe_batch(batch)}"
    )


def _describe_batch(batch: Any) -> str:
    if isinstance(batch, list | tuple):
        return f"a {type(batch).__name__} of {len(batch)} items"
    return describe(batch)


def call_model(model: nn.Module, data: Mapping[str, Any], inputs: Inputs = None) -> Any:
    """Run ``model`` on the inputs found in ``data``.

    ``inputs`` picks them: a key (``model(data[key])``), a sequence of keys
    (``model(*values)``), or None: ``data["input"]`` if there is one, else the batch entries
    named like the parameters of ``model.forward`` (``forward(self, image, text)`` gets
    ``data["image"]`` and ``data["text"]``).
    """
    if isinstance(inputs, str):
        return model(_entry(data, inputs, "`inputs`"))
    if inputs is not None:
        return model(*(_entry(data, key, "`inputs`") for key in inputs))
    if "input" in data:
        return model(data["input"])
    forward = unwrap(model).forward
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for name, required in _parameters(getattr(forward, "__func__", forward)):
        if name in data:
            kwargs[name] = data[name]
        elif required:
            missing.append(name)
    if missing or not kwargs:
        signature = inspect.signature(forward)
        raise MissingKeyError(
            f"cannot find the inputs of {type(unwrap(model)).__name__}.forward{signature} in "
            f"the batch: it has no 'input' entry and lacks {missing or list(signature.parameters)}"
            f"; the batch has keys {sorted(data)}. Name the input entries with "
            "attach(model, spec, inputs='key') or inputs=['key1', 'key2']"
        )
    return model(**kwargs)


@functools.lru_cache(maxsize=256)
def _parameters(function: Callable[..., Any]) -> tuple[tuple[str, bool], ...]:
    """(name, required) of each named parameter of ``forward``, read once per function."""
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name == "self":  # an unbound method
        parameters = parameters[1:]
    return tuple(
        (p.name, p.default is p.empty)
        for p in parameters
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def _entry(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise MissingKeyError(
            f"{what} names the batch entry {key!r}; the batch has keys {sorted(data)}"
        )
    return data[key]
