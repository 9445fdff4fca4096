"""``AuxiliaryHead``: deep supervision, a small head with its own target on a feature."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_bool, describe
from multiloss.aux import AuxiliaryLossModule
from multiloss.collect import collecting, current_book
from multiloss.layers._inputs import Selector, check_selector, read_target, select_tensor
from multiloss.losses import BinaryCrossEntropy, CrossEntropy, Loss, MeanAbsolute, MeanSquared

__all__ = ["AuxiliaryHead", "DroppedHead"]

LossFn = Callable[[Tensor, Tensor], Tensor]

# The built-in losses are multiloss's own: they check the target's shape, dtype and values (a
# class index out of range, a 0/1 label of 3) and name what is wrong, where torch's functions
# broadcast, fail with an IndexError or return a negative loss.
_LOSSES: dict[str, Loss] = {
    "cross_entropy": CrossEntropy(),
    "bce": BinaryCrossEntropy(input="logits"),
    "mse": MeanSquared(),
    "l1": MeanAbsolute(),
}


class AuxiliaryHead(AuxiliaryLossModule):
    """A small head on an intermediate feature, trained on its own target (deep supervision).

    The auxiliary classifiers of Inception (Szegedy et al. 2015) and deeply-supervised nets
    (Lee et al. 2015): the head's loss sends a short gradient path into the early layers, which
    helps deep networks start training. The feature passes through unchanged; the head runs
    only when its loss is wanted (``use_aux_loss`` on, and a collector open or a target given),
    so plain inference pays nothing.

    **The target** comes from the batch the collector (the trainer) was opened with,
    ``multiloss.current_book().batch``: ``target`` is a key for a dict batch
    (``{"image": x, "label": y}``), an index for a tuple or list batch (``(inputs, targets)``
    -> ``target=1``), or a callable ``batch -> Tensor`` for anything else. Passing
    ``head(x, target=y)`` explicitly takes precedence over the batch.

    Under ``torch.compile(fullgraph=True)`` the batch cannot be read (the collector is a
    ``ContextVar``): pass ``target=`` explicitly there, or compile without ``fullgraph``.

    **Fading out**: pass a schedule that decays to zero, e.g.
    ``aux_loss_schedule=Cosine(5000, start=1.0, end=0.0)``, and switch the head off with
    ``use_aux_loss = False`` once it reaches zero.

    **Leaving it out of the inference model**: either keep the head outside the model and tap
    an intermediate module with :class:`~multiloss.layers.Tapped` (the model object stays
    untouched), or put it inside the model and call :func:`~multiloss.layers.extract`, which
    returns the model with every head replaced by a pass-through.

    Args:
        head: The head: maps the feature to predictions (e.g. ``nn.Linear(64, 10)``).
        target: Where the head's target is in the batch: a key, an index or a callable.
        loss: ``"cross_entropy"`` (class indices or probabilities), ``"bce"`` (logits vs
            0/1 targets), ``"mse"``, ``"l1"``, or a callable ``(prediction, target) -> scalar``
            that must be >= 0. The term is named after a built-in loss, ``"loss"`` otherwise.
        detach: Stop the head's gradient at the feature (a probe that measures the feature,
            rather than deep supervision that shapes it).
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` (see :class:`~multiloss.AuxiliaryLossModule`).

    Diagnostics: ``loss``, plus ``accuracy`` for ``"cross_entropy"`` and ``"bce"``, ``rmse``
    for ``"mse"`` and ``mae`` for ``"l1"``.

    Raises:
        ValueError: The target is not in the batch (the message lists the batch's keys).
        RuntimeError: A collector is open without a batch and no target was passed.

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import AuxiliaryHead
        >>> head = AuxiliaryHead(torch.nn.Linear(8, 3), target="label")
        >>> head
        AuxiliaryHead(
          target='label', loss='cross_entropy', aux_loss_weight=1
          (head): Linear(in_features=8, out_features=3, bias=True)
        )
        >>> batch = {"x": torch.randn(4, 8), "label": torch.tensor([0, 2, 1, 0])}
        >>> with ml.collect(head, batch=batch) as book:
        ...     feature = head(batch["x"])  # passes the feature through
        >>> sorted(book)
        ['cross_entropy']
        >>> sorted(head.aux_loss_diagnostics())
        ['accuracy', 'loss']
        >>> with ml.collect(head, batch={"x": batch["x"]}):  # doctest: +ELLIPSIS
        ...     head(batch["x"])
        Traceback (most recent call last):
        ...
        ValueError: AuxiliaryHead could not find its target in the batch: no key 'label'; ...
    """

    def __init__(
        self,
        head: nn.Module,
        *,
        target: Selector,
        loss: str | LossFn = "cross_entropy",
        detach: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(head, nn.Module):
            raise TypeError(f"`head` of AuxiliaryHead must be an nn.Module; got {describe(head)}")
        self.head = head
        self.target = check_selector(target, "`target` of AuxiliaryHead")
        if isinstance(loss, str):
            if loss not in _LOSSES:
                listed = ", ".join(repr(name) for name in _LOSSES)
                raise ValueError(
                    f"`loss` of AuxiliaryHead must be one of {{{listed}}} or a callable; "
                    f"got {loss!r}"
                )
            self.loss_name: str = loss
            # A bound method, not the module: the shared loss must not become a submodule.
            self.loss_fn: LossFn = _LOSSES[loss].forward
        elif callable(loss):
            self.loss_name = "loss"
            self.loss_fn = loss
        else:
            raise TypeError(
                f"`loss` of AuxiliaryHead must be a loss name or a callable; got {describe(loss)}"
            )
        self.aux_loss_name = self.loss_name
        self.detach = check_bool(detach, "`detach` of AuxiliaryHead")

    def forward(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        if not self.use_aux_loss or (target is None and not collecting()):
            return x  # inference: the head does not run
        feature = select_tensor(x, None, "the module feeding AuxiliaryHead", "for the head")
        if target is None:
            target = self._target_from_batch()
        prediction = self.head(feature.detach() if self.detach else feature)
        self.save_for_aux_loss((prediction, target))
        return x

    def _target_from_batch(self) -> Tensor:
        book = current_book()
        batch = None if book is None else book.batch
        if batch is None:
            raise RuntimeError(
                "AuxiliaryHead needs its target but the collector has no batch; open it with "
                "multiloss.collect(model, batch=batch) (the Trainer does), or pass the target "
                "explicitly: head(feature, target=y)"
            )
        return read_target(batch, self.target, "AuxiliaryHead")

    def _loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        # Losses in float32: under autocast the head's output may be bfloat16.
        if target.is_floating_point():
            target = target.float()
        try:
            return self.loss_fn(prediction.float(), target)
        except ValueError as error:
            if self.loss_name != "loss":
                # Our own loss named the problem; say which head and which batch entry it was.
                raise type(error)(
                    f"the `target` {self.target!r} of AuxiliaryHead does not fit its loss "
                    f"{self.loss_name!r}: {error}"
                ) from None
            self._add_note(error)
            raise
        except (RuntimeError, IndexError, TypeError) as error:
            self._add_note(error)
            raise

    def _add_note(self, error: Exception) -> None:
        """Name the head and its target on an error raised by a loss callable."""
        if hasattr(error, "add_note"):  # Python >= 3.11
            error.add_note(
                f"multiloss: while computing the loss {self._loss_label()!r} of AuxiliaryHead "
                f"on its `target` {self.target!r}"
            )

    def _loss_label(self) -> str:
        if self.loss_name != "loss":
            return self.loss_name
        return str(getattr(self.loss_fn, "__name__", "callable"))

    def aux_loss_terms(self, cache: tuple[Tensor, Tensor]) -> Tensor:
        return self._loss(*cache)

    def aux_diagnostics(self, cache: tuple[Tensor, Tensor]) -> Mapping[str, float | Tensor]:
        prediction, target = cache[0].detach().float(), cache[1].detach()
        with torch.no_grad():
            diagnostics: dict[str, float | Tensor] = {"loss": self._loss(prediction, target)}
            if self.loss_name == "cross_entropy":
                labels = target.argmax(1) if target.is_floating_point() else target
                diagnostics["accuracy"] = (prediction.argmax(1) == labels).float().mean()
            elif self.loss_name == "bce":
                diagnostics["accuracy"] = ((prediction > 0) == (target > 0.5)).float().mean()
            elif self.loss_name == "mse":
                diagnostics["rmse"] = diagnostics["loss"].sqrt()  # type: ignore[union-attr]
            elif self.loss_name == "l1":
                diagnostics["mae"] = diagnostics["loss"]
        return diagnostics

    def inference_module(self) -> nn.Module:
        """What replaces this head in the inference model: a pass-through of the feature."""
        return DroppedHead("AuxiliaryHead")

    def extra_repr(self) -> str:
        parts = [f"target={self.target!r}", f"loss={self._loss_label()!r}"]
        if self.detach:
            parts.append("detach=True")
        return ", ".join([*parts, super().extra_repr()])


class DroppedHead(nn.Module):
    """Stands where a training-only head was: returns the feature(s) it was given, unchanged.

    Made by :func:`~multiloss.layers.extract`. It mirrors the head's own pass-through: the
    inputs named in ``passes`` come back (one as itself, several as a tuple, trailing ones
    that were not given left out); every other input (targets, labels) is ignored.

    Args:
        dropped: The class name of the head it replaces (shown in the ``repr``).
        passes: The names of the head's pass-through inputs, in order.

    Example:
        >>> import torch
        >>> x = torch.ones(2)
        >>> DroppedHead("AuxiliaryHead")(x, torch.zeros(2)) is x  # the target is ignored
        True
    """

    def __init__(self, dropped: str, passes: tuple[str, ...] = ("x",)) -> None:
        super().__init__()
        self.dropped = dropped
        self.passes = passes

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        values = [
            args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(self.passes)
        ]
        while len(values) > 1 and values[-1] is None:
            values.pop()
        return values[0] if len(values) == 1 else tuple(values)

    def extra_repr(self) -> str:
        return self.dropped
