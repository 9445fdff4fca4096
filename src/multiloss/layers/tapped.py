"""``Tapped``: run auxiliary-loss layers on intermediate outputs of a model that holds none."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from torch import nn

from multiloss._validation import describe

__all__ = ["Tapped"]


def _key(path: str) -> str:
    # Submodule names cannot contain dots; an empty path taps the model's own output.
    return path.replace(".", "_") if path else "output"


class Tapped(nn.Module):
    """A model plus auxiliary layers that watch its intermediate outputs from outside.

    ``Tapped(net, {"blocks.2": head})`` calls ``head(output)`` on the output of
    ``net.blocks[2]`` each time the tapped model runs, through forward hooks that exist only
    while :meth:`forward` runs. The tap's return value is ignored: the model computes exactly
    what it would alone, and the taps add their losses to the open collector. Train the
    ``Tapped`` module (its parameters and ``state_dict`` hold the model's under ``net.`` and the
    taps' under ``taps.``, so one optimizer and one checkpoint cover both); deploy ``.net``,
    which is the original model object, untouched: no head parameters, no hooks left behind.

    This is the recommended way to add deep supervision (:class:`AuxiliaryHead`) or activation
    penalties (:class:`ActivationRegularizer`) to a model you cannot or do not want to edit.
    Taps are named ``taps.<path with dots as underscores>`` in the loss names, so open the
    collector on the ``Tapped`` module (``multiloss.collect(tapped, batch=batch)``). A tapped
    module that runs twice in one forward pass calls its tap twice, which is an error unless
    the tap has ``accumulate_aux_loss=True``. Under ``torch.compile`` the hook registration
    breaks the graph: compile ``Tapped`` without ``fullgraph=True``.

    Args:
        net: The model.
        taps: Module path in ``net`` (``""`` for ``net``'s own output) -> the layer to call on
            that module's output.

    Raises:
        ValueError: A path names no submodule of ``net``, or two paths map to one tap name.

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import AuxiliaryHead, Tapped
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> tapped = Tapped(net, {"1": AuxiliaryHead(torch.nn.Linear(8, 3), target=1)})
        >>> x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
        >>> with ml.collect(tapped, batch=(x, y)) as book:
        ...     logits = tapped(x)
        >>> sorted(book)
        ['taps.1/cross_entropy']
        >>> tapped.net is net, [name for name, _ in net.named_parameters()]
        (True, ['0.weight', '0.bias', '2.weight', '2.bias'])
    """

    def __init__(self, net: nn.Module, taps: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"`net` of Tapped must be an nn.Module; got {describe(net)}")
        if not isinstance(taps, Mapping) or not taps:
            raise ValueError(
                f"`taps` of Tapped must be a non-empty mapping of module path -> layer; got "
                f"{describe(taps)}"
            )
        self.net = net
        self.taps = nn.ModuleDict()
        self._paths: dict[str, str] = {}
        for path, layer in taps.items():
            if not isinstance(path, str):
                raise TypeError(
                    f"each path in `taps` of Tapped must be a str; got {describe(path)}"
                )
            if not isinstance(layer, nn.Module):
                raise TypeError(
                    f"the tap at {path!r} of Tapped must be an nn.Module; got {describe(layer)}"
                )
            try:
                net.get_submodule(path)
            except AttributeError:
                names = [name for name, _ in net.named_modules() if name]
                shown = ", ".join(repr(name) for name in names[:12])
                more = f", ... ({len(names)} in all)" if len(names) > 12 else ""
                raise ValueError(
                    f"`taps` of Tapped names {path!r}, which is no submodule of "
                    f"{type(net).__name__}; its submodules are {shown}{more}"
                ) from None
            key = _key(path)
            if key in self._paths:
                raise ValueError(
                    f"the paths {self._paths[key]!r} and {path!r} in `taps` of Tapped both map "
                    f"to the tap name {key!r}; tap one module per name"
                )
            self._paths[key] = path
            self.taps[key] = layer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        handles = []
        try:
            for key, path in self._paths.items():
                hook = functools.partial(self._tap, key)
                handles.append(self.net.get_submodule(path).register_forward_hook(hook))
            return self.net(*args, **kwargs)
        finally:
            # The hooks live only during this call: `net` used on its own never sees them.
            for handle in handles:
                handle.remove()

    def _tap(self, key: str, module: nn.Module, inputs: Any, output: Any) -> None:
        self.taps[key](output)

    def inference_module(self) -> nn.Module:
        """The inference model: ``net`` itself (see :func:`multiloss.layers.extract`)."""
        return self.net

    def extra_repr(self) -> str:
        return "taps=" + ", ".join(repr(path) for path in self._paths.values())
