"""A model's output as named ports.

A tensor output is the port ``"output"``; a dict (or any mapping, such as a Hugging Face
``ModelOutput``) names its ports by its keys; a named tuple by its fields; any other tuple or
list is ``"output0"``, ``"output1"``, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from multiloss._validation import describe

__all__ = ["output_ports"]


def output_ports(output: Any) -> dict[str, Any]:
    """Port name -> value for a model's output.

    Example:
        >>> import torch
        >>> sorted(output_ports((torch.zeros(1), torch.ones(1))))
        ['output0', 'output1']
    """
    if isinstance(output, Tensor):
        return {"output": output}
    if isinstance(output, Mapping):
        bad = [key for key in output if not isinstance(key, str)]
        if bad:
            raise TypeError(
                f"the model returned a dict whose keys are not all port names (str): {bad[:5]}"
            )
        return dict(output)
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return dict(zip(output._fields, output, strict=True))
    if isinstance(output, list | tuple):
        return {f"output{i}": value for i, value in enumerate(output)}
    raise TypeError(
        "a model used with a loss spec must return a tensor, a dict of named outputs, or a "
        f"tuple of outputs; got {describe(output)}"
    )
