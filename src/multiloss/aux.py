"""``AuxiliaryLossModule``: the pull-style contract for layers that carry a side loss.

A layer with an auxiliary loss (an MoE router's balancing term, an activation penalty, a KL
term) subclasses this class, caches whatever its loss needs during ``forward`` with
``save_for_aux_loss``, and implements ``aux_loss_terms`` to turn that cache into raw,
unweighted loss terms. The rest is shared:

* ``aux_loss_weight`` (validated finite, >= 0; optionally times a schedule of the step) and
  per-term ``aux_loss_coefficients`` weigh the terms;
* ``use_aux_loss = False`` turns the layer's loss off: nothing is cached, nothing computed;
* inside ``multiloss.collect`` (and so in the trainer) every call of the layer contributes its
  terms as named losses ``<layer path>/<term>``, also under ``torch.compile``;
* ``compute_aux_loss()`` pulls the weighted sum of the terms from the last forward's cache, and
  ``aux_loss_diagnostics()`` reports numbers about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_bool, check_finite_float, check_loss_name, describe
from multiloss.collect import collecting, emit_aux_terms
from multiloss.schedules import Schedule, as_schedule

__all__ = ["AuxiliaryLossModule"]


class AuxiliaryLossModule(nn.Module):
    """Base class for modules that compute an auxiliary loss from their own forward pass.

    Subclasses call :meth:`save_for_aux_loss` in ``forward`` and implement
    :meth:`aux_loss_terms` (and optionally :meth:`aux_diagnostics` and
    :meth:`aux_loss_coefficients`).

    Args:
        aux_loss_weight: Non-negative multiplier of the layer's loss.
        use_aux_loss: Whether the layer computes and contributes its loss at all.
        accumulate_aux_loss: When the layer runs several times in one forward pass (a siamese
            encoder, a block reused in a loop), sum the per-call losses into one term. Without
            it, a second call in the same pass is an error that names the layer.
        aux_loss_schedule: Optional schedule of the step that multiplies ``aux_loss_weight``
            (a head that fades out, a KL term that anneals in).

    Example:
        >>> import torch, multiloss as ml
        >>> class L1Activity(ml.AuxiliaryLossModule):
        ...     aux_loss_name = "l1"
        ...     def forward(self, x):
        ...         self.save_for_aux_loss(x)
        ...         return x
        ...     def aux_loss_terms(self, cache):
        ...         return cache.abs().mean()
        >>> layer = L1Activity(aux_loss_weight=0.1)
        >>> _ = layer(torch.tensor([1.0, -3.0]))
        >>> float(layer.compute_aux_loss())  # the layer's loss; the trainer applies the weight
        2.0
        >>> with ml.collect(layer) as book:
        ...     _ = layer(torch.tensor([2.0]))
        >>> dict(book.weights)
        {'l1': 0.1}
    """

    #: Name of the term when ``aux_loss_terms`` returns a single tensor.
    aux_loss_name: str = "aux"

    def __init__(
        self,
        *,
        aux_loss_weight: float = 1.0,
        use_aux_loss: bool = True,
        accumulate_aux_loss: bool = False,
        aux_loss_schedule: Schedule | float | None = None,
    ) -> None:
        super().__init__()
        self.aux_loss_weight = aux_loss_weight
        self.use_aux_loss = use_aux_loss
        self.accumulate_aux_loss = check_bool(
            accumulate_aux_loss, f"`accumulate_aux_loss` of {type(self).__name__}"
        )
        self.aux_loss_schedule = (
            None
            if aux_loss_schedule is None
            else as_schedule(
                aux_loss_schedule,
                f"`aux_loss_schedule` of {type(self).__name__}",
                min_value=0.0,
            )
        )
        self._aux_cache: Any = None
        self._aux_has_run = False

    # -- settings -----------------------------------------------------------------------------
    @property
    def aux_loss_weight(self) -> float:
        """Non-negative multiplier of this layer's loss."""
        return self._aux_loss_weight

    @aux_loss_weight.setter
    def aux_loss_weight(self, value: float) -> None:
        self._aux_loss_weight = check_finite_float(
            value, f"`aux_loss_weight` of {type(self).__name__}", min_value=0.0
        )

    @property
    def use_aux_loss(self) -> bool:
        """Whether this layer computes and contributes its auxiliary loss."""
        return self._use_aux_loss

    @use_aux_loss.setter
    def use_aux_loss(self, value: bool) -> None:
        self._use_aux_loss = check_bool(value, f"`use_aux_loss` of {type(self).__name__}")
        if not value:
            self._aux_cache = None  # free what the last forward kept

    def effective_aux_loss_weight(self, step: int) -> float:
        """``aux_loss_weight``, times the schedule's value at ``step`` if there is one."""
        if self.aux_loss_schedule is None:
            return self._aux_loss_weight
        factor = check_finite_float(
            self.aux_loss_schedule(step),
            f"the value of `aux_loss_schedule` {self.aux_loss_schedule!r} of "
            f"{type(self).__name__} at step {step}",
            min_value=0.0,
        )
        return self._aux_loss_weight * factor

    # -- what subclasses implement ----------------------------------------------------------
    def aux_loss_terms(self, cache: Any) -> Tensor | Mapping[str, Tensor]:
        """Raw, unweighted loss term(s) from the cache saved by one forward call.

        Return one scalar tensor (named :attr:`aux_loss_name`) or a mapping of term name to
        scalar tensor. Every term must be >= 0.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement aux_loss_terms(cache)")

    def aux_loss_coefficients(self) -> Mapping[str, float]:
        """Per-term multipliers (default 1.0 for a term not listed)."""
        return {}

    def aux_diagnostics(self, cache: Any) -> Mapping[str, float | Tensor]:
        """Numbers describing the last forward call (read only when logs are written)."""
        return {}

    def after_optimizer_step(self) -> None:
        """Called by the trainer after every optimizer step that was taken (not skipped).

        Layers with state that follows the optimizer rather than the forward pass override
        it: an aux-loss-free MoE router updates its expert bias here, a global-batch balancing
        loss resets the counts it accumulated over the micro-batches of the step.
        """

    def reset_accumulation(self) -> None:
        """Called by the trainer when a step is skipped (non-finite loss), before the next one.

        Layers that accumulate statistics over the micro-batches of a step drop them here.
        """

    # -- what subclasses call -------------------------------------------------------------
    def save_for_aux_loss(self, cache: Any, *, emit: bool = True) -> None:
        """Keep ``cache`` for the loss; inside a collector, contribute this call's terms.

        Does nothing when ``use_aux_loss`` is off. The terms are computed here (inside the
        forward pass, so inside autocast and inside a compiled graph) only when a collector is
        open; plain inference computes nothing.

        Args:
            cache: Whatever ``aux_loss_terms`` and ``aux_diagnostics`` need.
            emit: False keeps the cache (for ``compute_aux_loss`` and diagnostics) and
                registers the layer with the collector without terms: for a layer that injects
                its loss's gradient itself (an MoE gradient carrier), so it is not counted twice.
        """
        if not self._use_aux_loss:
            return
        # Bypass nn.Module.__setattr__: a cached Parameter or Module must not be registered
        # (it would appear in state_dict and parameters()).
        object.__setattr__(self, "_aux_cache", cache)
        self._aux_has_run = True
        if collecting():
            emit_aux_terms(self, self._terms(cache) if emit else {})

    # -- pulling ------------------------------------------------------------------------------
    def _terms(self, cache: Any) -> dict[str, Tensor]:
        """The terms of one call, with their names and the coefficients checked (host-side
        Python only: a few dict lookups per call, nothing read from the device)."""
        terms = self.aux_loss_terms(cache)
        owner = type(self).__name__
        if isinstance(terms, Tensor):
            name = check_loss_name(self.aux_loss_name, f"`aux_loss_name` of {owner}")
            found = {name: terms}
        elif isinstance(terms, Mapping):
            found = dict(terms)
            for name, value in found.items():
                check_loss_name(name, f"a term name returned by {owner}.aux_loss_terms()")
                if not isinstance(value, Tensor):
                    raise TypeError(
                        f"term {name!r} returned by {owner}.aux_loss_terms() must be a scalar "
                        f"Tensor; got {describe(value)}"
                    )
        else:
            raise TypeError(
                f"{owner}.aux_loss_terms() must return a scalar Tensor or a mapping of term name "
                f"to scalar Tensor; got {describe(terms)}"
            )
        self._check_coefficients(found)
        return found

    def _check_coefficients(self, terms: Mapping[str, Tensor]) -> None:
        """Every coefficient names a term and is a finite float >= 0."""
        owner = type(self).__name__
        coefficients = self.aux_loss_coefficients()
        if not isinstance(coefficients, Mapping):
            raise TypeError(
                f"{owner}.aux_loss_coefficients() must return a mapping of term name to float; "
                f"got {describe(coefficients)}"
            )
        for name, value in coefficients.items():
            if name not in terms:
                raise ValueError(
                    f"{owner}.aux_loss_coefficients() names a term {name!r} that "
                    f"{owner}.aux_loss_terms() did not return; its terms are {sorted(terms)}"
                )
            check_finite_float(
                value,
                f"coefficient {name!r} returned by {owner}.aux_loss_coefficients()",
                min_value=0.0,
            )

    def _require_cache(self, what: str) -> Any:
        if not self._aux_has_run:
            raise RuntimeError(
                f"{type(self).__name__}.{what}() was called before any forward pass; "
                "call the layer (or the model that contains it) first"
            )
        return self._aux_cache

    def compute_aux_loss(self) -> Tensor:
        """The layer's loss from its last forward: ``sum(coefficient * term)``.

        ``aux_loss_weight`` is not applied (the trainer applies it). With ``use_aux_loss`` off
        this is a zero tensor.

        Raises:
            RuntimeError: There was no forward pass yet.
            ValueError: A term is negative (auxiliary losses promise to be >= 0).
        """
        if not self._use_aux_loss:
            return torch.zeros((), device=_device_of(self))
        cache = self._require_cache("compute_aux_loss")
        coefficients = self.aux_loss_coefficients()
        total: Tensor | None = None
        for term, value in self._terms(cache).items():
            if bool((value.detach() < 0).any()):
                raise ValueError(
                    f"{type(self).__name__} returned a negative auxiliary loss term {term!r} "
                    f"({float(value.detach().min()):.6g}); auxiliary losses must be >= 0"
                )
            weighted = value * coefficients.get(term, 1.0)
            total = weighted if total is None else total + weighted
        return total if total is not None else torch.zeros((), device=_device_of(self))

    def aux_loss_diagnostics(self) -> dict[str, float]:
        """Diagnostics of the last forward as plain floats (one device read for all of them).

        Empty while ``use_aux_loss`` is off (nothing was cached).
        """
        if not self._use_aux_loss:
            return {}
        cache = self._require_cache("aux_loss_diagnostics")
        raw = dict(self.aux_diagnostics(cache))
        result: dict[str, float] = {}
        tensors: dict[str, Tensor] = {}
        for key, value in raw.items():
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    raise ValueError(
                        f"diagnostic {key!r} of {type(self).__name__} must be a scalar; got "
                        f"shape {tuple(value.shape)}"
                    )
                tensors[key] = value.detach().reshape(()).float()
            elif isinstance(value, int | float) and not isinstance(value, bool):
                result[key] = float(value)
            else:
                raise TypeError(
                    f"diagnostic {key!r} of {type(self).__name__} must be a number; "
                    f"got {describe(value)}"
                )
        if tensors:
            values = torch.stack(list(tensors.values())).cpu().tolist()
            result.update(zip(tensors, values, strict=True))
        return {key: result[key] for key in raw}

    def extra_repr(self) -> str:
        parts = [f"aux_loss_weight={self._aux_loss_weight:g}"]
        if not self._use_aux_loss:
            parts.append("use_aux_loss=False")
        if self.accumulate_aux_loss:
            parts.append("accumulate_aux_loss=True")
        if self.aux_loss_schedule is not None:
            parts.append(f"aux_loss_schedule={self.aux_loss_schedule!r}")
        return ", ".join(parts)


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")
