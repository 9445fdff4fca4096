"""The ambient loss collector: ``add_loss``, ``record``, ``collect`` and the ``LossBook``.

Any code running inside ``with multiloss.collect() as book:`` can emit a named loss with
``add_loss`` or a diagnostic with ``record``, at any depth, without a parameter being passed
down. Outside a collector both calls return at once, so inference code pays nothing.

A loss emitted from inside a module is named by that module's path in the root model plus the
given name, so forty MoE layers give forty distinct terms (``blocks.3.moe/switch``).

Two paths feed a book:

* eager code finds the active book through a ``ContextVar`` and the emitting module by walking
  the Python frames up to the first ``self`` that is an ``nn.Module``;
* code compiled by ``torch.compile`` cannot do either, so emissions are appended to a module-level
  list that the book drains the next time it is read. Dynamo traces list appends as side effects,
  which keeps ``fullgraph=True`` working. Pass ``module=self`` to ``add_loss`` (or use an
  ``AuxiliaryLossModule``, which always knows itself) to keep path names under compilation.
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from multiloss._modules import module_path
from multiloss._validation import check_bool, check_finite_float, check_loss_name, describe
from multiloss.book import _OPEN, _PENDING, LossBook

if TYPE_CHECKING:
    from multiloss.aux import AuxiliaryLossModule

__all__ = ["LossBook", "add_loss", "collect", "current_book", "mark_representation", "record"]

_ACTIVE: ContextVar[LossBook | None] = ContextVar("multiloss_active_book", default=None)
#: Modules passed as ``add_loss(module=...)`` that were found outside the collector's model.
_WARNED_OUTSIDE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class collect:  # noqa: N801  (a context manager used like torch.no_grad)
    """Open a :class:`LossBook` that gathers every loss emitted inside the block.

    Args:
        model: The root model. Loss names use module paths relative to it; without it, the
            outermost module on the call stack is taken as the root. Required for losses that
            auxiliary-loss layers emit from inside ``torch.compile``'d code.
        step: The training step, used by auxiliary-loss weight schedules.
        device: If given, every loss must live on this device.
        batch: The batch being processed, exposed as ``current_book().batch`` to layers that
            need a target of their own.

    Example:
        >>> import torch, multiloss as ml
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.enc = torch.nn.Linear(4, 4)
        ...     def forward(self, x):
        ...         h = self.enc(x)
        ...         ml.add_loss("sparsity", h.abs().mean())
        ...         return h.pow(2).mean()
        >>> net = Net()
        >>> with ml.collect(net) as book:
        ...     task = net(torch.randn(2, 4))
        >>> sorted(book)
        ['sparsity']
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        step: int = 0,
        device: torch.device | str | None = None,
        batch: Any = None,
    ) -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"`model` of collect() must be an nn.Module; got {describe(model)}")
        self._book = LossBook(
            model,
            step=step,
            device=device
            if device is None or isinstance(device, torch.device)
            else torch.device(device),
            batch=batch,
        )
        self._token: Token[LossBook | None] | None = None

    def __enter__(self) -> LossBook:
        if self._token is not None:
            raise RuntimeError("this collect() is already open; create a new one per block")
        book = self._book
        book._entry_frame = sys._getframe(1)
        book._pending_from = len(_PENDING)
        self._token = _ACTIVE.set(book)
        _OPEN[0] += 1
        return book

    def __exit__(self, *exc_info: object) -> None:
        if self._token is None:
            raise RuntimeError("collect.__exit__ called without a matching __enter__")
        _OPEN[0] -= 1
        _ACTIVE.reset(self._token)
        book = self._book
        if exc_info[0] is None:
            book._flush()
        else:
            del _PENDING[book._pending_from :]
        book._entry_frame = None  # do not keep the caller's frame (and its locals) alive


def current_book() -> LossBook | None:
    """The innermost open :class:`LossBook`, or None outside any ``collect`` block."""
    return _ACTIVE.get()


def add_loss(
    name: str,
    value: Tensor,
    *,
    weight: float = 1.0,
    accumulate: bool = False,
    module: nn.Module | None = None,
) -> Tensor:
    """Emit a named loss from anywhere; returns ``value`` unchanged.

    Inside ``collect`` the loss is recorded under ``<module path>/<name>``, where the module is
    the one whose ``forward`` (or method) made the call. Outside, this returns at once.

    Args:
        name: Non-empty name, unique within one forward pass unless ``accumulate``.
        value: A scalar floating-point tensor (one element of any shape is accepted).
        weight: Finite multiplier; negative maximizes the loss.
        accumulate: Sum this emission with others of the same name that also pass True
            (for a block applied several times per forward). Otherwise a second emission of the
            same name is an error that names both emitters.
        module: The emitting module, if the caller wants to skip the stack walk; required for
            path names inside ``torch.compile``'d code.

    Example:
        >>> import torch, multiloss as ml
        >>> x = torch.tensor(3.0)
        >>> ml.add_loss("outside", x) is x  # no collector: nothing happens
        True
    """
    if torch.compiler.is_compiling():
        if _OPEN[0]:
            _PENDING.append(("loss", name, value, float(weight), accumulate, module))
        return value
    book = _ACTIVE.get()
    if book is None:
        return value
    check_loss_name(name)
    weight = check_finite_float(weight, f"`weight` for loss {name!r}")
    check_bool(accumulate, f"`accumulate` of add_loss for loss {name!r}")
    if module is not None:
        _check_emitter(module, name, book)
    book._emit_loss(name, value, weight, accumulate, module, sys._getframe(1))
    return value


def _check_emitter(module: Any, name: str, book: LossBook) -> None:
    """``module`` must be an ``nn.Module``; one outside the collector's model is warned about.

    A warning, not an error: a loss module that a spec attaches lives outside the model and
    may legitimately pass itself. Its loss is then named as if the model itself had emitted it,
    which is worth knowing (two such modules would clash on one name).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"`module` of add_loss for loss {name!r} must be the emitting nn.Module (usually "
            f"self) or None; got {describe(module)}"
        )
    root = book.root
    if root is None or module in _WARNED_OUTSIDE:
        return
    if module_path(root, module) is None:
        _WARNED_OUTSIDE.add(module)  # once per module: the lookup rebuilds the path cache
        warnings.warn(
            f"`module` of add_loss for loss {name!r} is a {type(module).__name__} that is not "
            f"part of the collector's model ({type(root).__name__}); the loss is named {name!r} "
            "as if the model itself emitted it. Pass a module of the model, or leave `module` "
            "out to use the calling module",
            UserWarning,
            stacklevel=3,
        )


def record(name: str, value: Tensor | float, *, module: nn.Module | None = None) -> None:
    """Log a non-loss scalar (a diagnostic) under ``<module path>/<name>``.

    Tensors are detached and read only when the trainer writes its logs, so recording costs no
    device sync. Outside ``collect`` this returns at once.

    Example:
        >>> import torch, multiloss as ml
        >>> with ml.collect() as book:
        ...     ml.record("temperature", 0.07)
        >>> book.metrics
        {'temperature': 0.07}
    """
    if torch.compiler.is_compiling():
        if _OPEN[0]:
            _PENDING.append(("metric", name, value, module))
        return
    book = _ACTIVE.get()
    if book is None:
        return
    check_loss_name(name)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"metric {name!r} must be a scalar; got a tensor of shape {tuple(value.shape)}"
            )
        value = value.reshape(())
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"metric {name!r} must be a number or scalar tensor; got {describe(value)}")
    else:
        value = float(value)
    book._emit_metric(name, value, module, sys._getframe(1))


def mark_representation(value: Tensor) -> Tensor:
    """Mark ``value`` as the representation shared by the task heads; returns it unchanged.

    Representation-level balancers (MGDA-UB and friends) differentiate each loss with respect to
    this tensor instead of the shared parameters, which is much cheaper. Outside a collector
    this returns at once.

    Example:
        >>> import torch, multiloss as ml
        >>> with ml.collect() as book:
        ...     z = ml.mark_representation(torch.ones(2, 3))
        >>> book.representation is z
        True
    """
    if torch.compiler.is_compiling():
        if _OPEN[0]:
            _PENDING.append(("representation", value))
        return value
    book = _ACTIVE.get()
    if book is not None:
        if not isinstance(value, Tensor):
            raise TypeError(
                f"`value` of mark_representation must be a Tensor; got {describe(value)}"
            )
        book._set_representation(value)
    return value


def emit_aux_terms(module: AuxiliaryLossModule, terms: Mapping[str, Tensor]) -> None:
    """Hand an auxiliary-loss layer's raw terms to the active book (used by ``aux.py``)."""
    if torch.compiler.is_compiling():
        if _OPEN[0]:
            _PENDING.append(("aux", module, dict(terms)))
        return
    book = _ACTIVE.get()
    if book is not None:
        book._emit_aux(module, terms, sys._getframe(2))


def collecting() -> bool:
    """Whether a collector is open (usable inside compiled code, unlike ``current_book``)."""
    if torch.compiler.is_compiling():
        return bool(_OPEN[0])
    return _ACTIVE.get() is not None
