"""``extract``: the inference model, without the heads and penalties that exist for training."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from multiloss._validation import check_bool, describe
from multiloss.aux import AuxiliaryLossModule

__all__ = ["extract"]


def _replacement(module: nn.Module) -> nn.Module:
    """What ``module`` becomes in the inference model (itself if it has no opinion)."""
    method = getattr(module, "inference_module", None)
    if not callable(method):
        return module
    replacement = method()
    if not isinstance(replacement, nn.Module):
        raise TypeError(
            f"{type(module).__name__}.inference_module() must return an nn.Module; got "
            f"{describe(replacement)}"
        )
    return replacement


def _strip(module: nn.Module) -> None:
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        replacement = _replacement(child)
        while replacement is not child:  # a wrapper may wrap another wrapper
            child, replacement = replacement, _replacement(replacement)
        if child is not module._modules[name]:
            module._modules[name] = child
        _strip(child)


def extract(model: nn.Module, *, inplace: bool = False, disable_aux_losses: bool = True) -> Any:
    """The inference model: training-only heads dropped, wrapping penalties unwrapped.

    Every module that defines ``inference_module()`` is replaced by what it returns:

    * :class:`AuxiliaryHead` and :class:`ContrastiveHead` become a :class:`DroppedHead` that
      passes the feature through, so their parameters leave the ``state_dict``;
    * :class:`ActivationRegularizer`, :class:`OrthogonalityRegularizer` become the module they
      wrap (an identity when they wrap none), :class:`EntropyRegularizer` an identity, so the
      ``state_dict`` keys are those of the plain model;
    * a :class:`Tapped` model (and any training wrapper that defines ``inference_module``, as
      ``multiloss.attach(...)``'s does) becomes the model it wraps;
    * :class:`GaussianKL` stays (it is the latent: it returns ``mean`` in eval mode).

    Any auxiliary-loss layer that remains (``GaussianKL``, an MoE router) has its loss switched
    off (``use_aux_loss = False``) unless ``disable_aux_losses`` is False, so inference caches
    and computes nothing for it. The train/eval mode is left as it was.

    Args:
        model: The training model (or a wrapper around it).
        inplace: Modify ``model`` itself and return it (no second copy of the weights in
            memory; the training model loses its heads). By default the inference model is a
            deep copy and the training model is left as it was, ready to train on.
        disable_aux_losses: Switch off the loss of every auxiliary-loss layer that remains.

    Returns:
        The inference model.

    Example:
        >>> import torch
        >>> from multiloss.layers import AuxiliaryHead, extract
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 8), AuxiliaryHead(torch.nn.Linear(8, 3), target="y"),
        ...     torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> inference = extract(model)
        >>> inference[1]
        DroppedHead(AuxiliaryHead)
        >>> sorted(inference.state_dict())
        ['0.bias', '0.weight', '3.bias', '3.weight']
        >>> isinstance(model[1], AuxiliaryHead)  # the training model keeps its head
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` of extract() must be an nn.Module; got {describe(model)}")
    check_bool(inplace, "`inplace` of extract()")
    check_bool(disable_aux_losses, "`disable_aux_losses` of extract()")
    replacement = _replacement(model)
    while replacement is not model:
        model, replacement = replacement, _replacement(replacement)
    if not inplace:
        # The last forward's caches may hold tensors inside the autograd graph, which cannot be
        # deep-copied (and are not part of the inference model): copy them as None.
        memo: dict[int, Any] = {
            id(layer._aux_cache): None
            for layer in model.modules()
            if isinstance(layer, AuxiliaryLossModule) and layer._aux_cache is not None
        }
        model = copy.deepcopy(model, memo)
    _strip(model)
    if disable_aux_losses:
        for layer in model.modules():
            if isinstance(layer, AuxiliaryLossModule):
                layer.use_aux_loss = False
    return model
