"""Which module produced each output: forward hooks installed for one pass.

``Automatic`` chooses a loss from the module that produced an output port. During the first
forward pass of a training net (and in ``explain``), a hook on every submodule remembers, for
each object a module returns (and each tensor inside a returned tuple or dict), the first
module that returned it. Hooks fire innermost first, so the producer of a tensor that is passed
up unchanged (``nn.Sequential`` returning its last layer's output, ``nn.Identity``) is the
innermost module that made it. The hooks are removed when the pass ends; the objects are held
only until the plan is made, so their ids cannot be reused by other tensors meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from multiloss._modules import module_path, unwrap

__all__ = ["Producer", "ProducerTrace"]


@dataclass(frozen=True)
class Producer:
    """The module that returned an output, and its path in the model ("" for the model)."""

    module: nn.Module
    path: str

    def describe(self) -> str:
        """``module 'head.1' (Softmax(dim=-1))``, or ``the model itself (Net)``."""
        text = repr(self.module).split("\n")[0]
        if text.endswith("("):  # a container: its repr spans lines
            text = f"{type(self.module).__name__}(...)"
        if not self.path:
            return f"the model itself ({text})"
        return f"module {self.path!r} ({text})"


class ProducerTrace:
    """Context manager: while open, remembers the innermost module that returned each object.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=-1))
        >>> with ProducerTrace(model) as trace:
        ...     out = model(torch.zeros(1, 3))
        >>> trace.producer_of(out).describe()
        "module '1' (Softmax(dim=-1))"
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = unwrap(model)
        self._seen: dict[int, tuple[Any, nn.Module]] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> ProducerTrace:
        self._seen.clear()
        self._handles = [
            module.register_forward_hook(self._hook) for module in self.model.modules()
        ]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self._remember(output, module)
        if isinstance(output, list | tuple):
            for item in output:
                self._remember(item, module)
        elif isinstance(output, Mapping):
            for item in output.values():
                self._remember(item, module)

    def _remember(self, value: Any, module: nn.Module) -> None:
        # Keep the value itself so its id stays unique while the trace lives.
        self._seen.setdefault(id(value), (value, module))

    def producer_of(self, value: Any) -> Producer | None:
        """The innermost module that returned ``value`` during the trace, or None."""
        hit = self._seen.get(id(value))
        if hit is None or hit[0] is not value:
            return None
        module = hit[1]
        return Producer(module, module_path(self.model, module) or "")

    def clear(self) -> None:
        """Forget the traced objects (releases the tensors)."""
        self._seen.clear()
