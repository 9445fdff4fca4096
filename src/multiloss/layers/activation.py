"""``ActivationRegularizer``: an L1, L2 or sparsity-KL penalty on a module's activations."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_choice, check_finite_float, check_int, check_probability
from multiloss.aux import AuxiliaryLossModule
from multiloss.layers._inputs import Selector, check_selector, select_tensor

__all__ = ["ActivationRegularizer"]

_PENALTIES = ("l1", "l2", "kl")
_SQUASHES = ("tanh", "sigmoid", "none")
# Keeps the KL finite when a unit's mean activity reaches exactly 0 or 1 (squash="none").
_EPS = 1e-6


class ActivationRegularizer(AuxiliaryLossModule):
    """Penalize a module's activations: L1, L2, or KL to a target sparsity ``rho``.

    Wrap a module (``ActivationRegularizer(nn.ReLU())``) to penalize what it returns, or place
    the regularizer after one (``nn.Sequential(nn.Linear(8, 8), nn.ReLU(),
    ActivationRegularizer())``) to penalize its input; either way the activations pass through
    unchanged. The raw terms, all averaged so the weight does not depend on the width:

    * ``"l1"``: ``mean |a|`` over every element (drives activations to exactly zero);
    * ``"l2"``: ``mean a^2`` over every element (keeps them small);
    * ``"kl"``: the sparse-autoencoder penalty, ``mean_j KL(rho || rho_hat_j)`` over units
      ``j``, where ``rho_hat_j`` is the mean activity of unit ``j`` over the batch (and any
      other dimension than ``unit_dim``) and ``KL(p || q) = p log(p/q) + (1-p) log((1-p)/(1-q))``.

    The KL needs ``rho_hat`` in (0, 1), which raw activations do not promise. ``squash`` says
    how activations become activities in [0, 1) first: ``"tanh"`` (default) uses
    ``tanh(|a|)``, which is 0 for a silent unit, about ``|a|`` for small activations and below
    1 for any; it suits ReLU-family and signed units. ``"sigmoid"`` uses ``sigmoid(a)``, the
    classic sparse autoencoder, for wrapping the pre-activation (a Linear) of sigmoid units.
    ``"none"`` takes activations as already in [0, 1] (outputs of ``nn.Sigmoid``); ``rho_hat``
    is then clamped to [1e-6, 1 - 1e-6] only to keep the loss finite.

    Args:
        module: The module whose output is penalized; None to penalize this layer's input.
        penalty: One of ``"l1"``, ``"l2"``, ``"kl"``; also the term's name.
        rho: Target mean activity for ``"kl"``, in (0, 1).
        squash: How ``"kl"`` maps activations into [0, 1): ``"tanh"``, ``"sigmoid"``, ``"none"``.
        unit_dim: The dimension that indexes units (``-1`` for ``(N, D)`` or ``(N, T, D)``;
            ``1`` for ``(N, C, H, W)`` feature maps). Used by ``"kl"`` and ``dead_units``.
        zero_threshold: An activation with ``|a| <= zero_threshold`` counts as near zero in
            the diagnostics.
        select: When the module returns (or the layer receives) a tuple or dict, where the
            activations are in it: an index, a key, or a callable. The whole output passes
            through.
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` (see :class:`~multiloss.AuxiliaryLossModule`).

    Diagnostics: ``mean`` (mean activation), ``near_zero`` (fraction of activations with
    ``|a| <= zero_threshold``), ``dead_units`` (fraction of units near zero on every example
    of the batch), and for ``"kl"`` ``activity`` (mean of ``rho_hat``).

    Raises:
        TypeError: The module produced no floating-point tensor (at ``select``).

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import ActivationRegularizer
        >>> relu = ActivationRegularizer(torch.nn.ReLU(), penalty="l1", aux_loss_weight=1e-3)
        >>> relu
        ActivationRegularizer(
          penalty='l1', aux_loss_weight=0.001
          (module): ReLU()
        )
        >>> with ml.collect(relu) as book:
        ...     h = relu(torch.tensor([[-1.0, 2.0], [0.0, 4.0]]))
        >>> float(book["l1"])  # mean |relu(x)| = (0 + 2 + 0 + 4) / 4
        1.5
        >>> relu.aux_loss_diagnostics()["near_zero"]
        0.5
    """

    def __init__(
        self,
        module: nn.Module | None = None,
        *,
        penalty: str = "l1",
        rho: float = 0.05,
        squash: str = "tanh",
        unit_dim: int = -1,
        zero_threshold: float = 1e-3,
        select: Selector | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(
                f"`module` of ActivationRegularizer must be an nn.Module or None; got "
                f"{type(module).__name__}"
            )
        self.module = module
        self.penalty = check_choice(penalty, "`penalty` of ActivationRegularizer", _PENALTIES)
        self.aux_loss_name = self.penalty
        self.rho = check_probability(rho, "`rho` of ActivationRegularizer")
        self.squash = check_choice(squash, "`squash` of ActivationRegularizer", _SQUASHES)
        self.unit_dim = check_int(unit_dim, "`unit_dim` of ActivationRegularizer")
        self.zero_threshold = check_finite_float(
            zero_threshold, "`zero_threshold` of ActivationRegularizer", min_value=0.0
        )
        self.select = (
            None if select is None else check_selector(select, "`select` of ActivationRegularizer")
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.module is None:
            if len(args) != 1 or kwargs:
                raise TypeError(
                    "ActivationRegularizer without a `module` takes exactly one input (the "
                    f"activations); got {len(args)} positional and {len(kwargs)} keyword inputs"
                )
            output = args[0]
            who = "the layer before ActivationRegularizer"
        else:
            output = self.module(*args, **kwargs)
            who = f"the module wrapped by ActivationRegularizer ({type(self.module).__name__})"
        if self.use_aux_loss:
            activations = select_tensor(output, self.select, who)
            self._check_unit_dim(activations)
            self.save_for_aux_loss(activations)
        return output

    def _check_unit_dim(self, activations: Tensor) -> None:
        """``unit_dim`` must index the activations (shapes only: free on any device)."""
        dim = self.unit_dim
        if activations.dim() > 0 and not -activations.dim() <= dim < activations.dim():
            raise ValueError(
                f"`unit_dim` of ActivationRegularizer must index a dimension of the activations "
                f"(in [{-activations.dim()}, {activations.dim() - 1}]); got {dim} for "
                f"activations of shape {tuple(activations.shape)}"
            )

    def _units(self, activations: Tensor) -> Tensor:
        """``activations`` as ``(rows, units)``: every dimension but ``unit_dim`` is a row."""
        if activations.dim() == 0:
            return activations.reshape(1, 1)
        self._check_unit_dim(activations)
        moved = activations.movedim(self.unit_dim, -1)
        return moved.reshape(-1, moved.shape[-1])

    def _activity(self, activations: Tensor) -> Tensor:
        """Mean activity per unit in [0, 1) (what the KL compares with ``rho``)."""
        units = self._units(activations.float())
        if self.squash == "tanh":
            units = torch.tanh(units.abs())
        elif self.squash == "sigmoid":
            units = torch.sigmoid(units)
        return units.mean(0).clamp(_EPS, 1.0 - _EPS)

    def aux_loss_terms(self, cache: Tensor) -> Tensor:
        activations = cache.float()  # reduce in float32 under autocast
        if self.penalty == "l1":
            return activations.abs().mean()
        if self.penalty == "l2":
            return activations.pow(2).mean()
        rho, rho_hat = self.rho, self._activity(activations)
        kl = rho * math.log(rho) - rho * torch.log(rho_hat)
        kl = kl + (1.0 - rho) * math.log(1.0 - rho) - (1.0 - rho) * torch.log1p(-rho_hat)
        # KL >= 0 exactly; rounding can leave -1e-9 at rho_hat == rho.
        return kl.clamp_min(0.0).mean()

    def aux_diagnostics(self, cache: Tensor) -> Mapping[str, float | Tensor]:
        activations = cache.detach().float()
        near = activations.abs() <= self.zero_threshold
        diagnostics: dict[str, float | Tensor] = {
            "mean": activations.mean(),
            "near_zero": near.float().mean(),
            "dead_units": self._units(near).all(0).float().mean(),
        }
        if self.penalty == "kl":
            diagnostics["activity"] = self._activity(activations).mean()
        return diagnostics

    def inference_module(self) -> nn.Module:
        """What replaces this layer in the inference model (:func:`multiloss.layers.extract`)."""
        return self.module if self.module is not None else nn.Identity()

    def extra_repr(self) -> str:
        parts = [f"penalty={self.penalty!r}"]
        if self.penalty == "kl":
            parts += [f"rho={self.rho:g}", f"squash={self.squash!r}"]
        if self.unit_dim != -1:
            parts.append(f"unit_dim={self.unit_dim}")
        if self.zero_threshold != 1e-3:
            parts.append(f"zero_threshold={self.zero_threshold:g}")
        if self.select is not None:
            parts.append(f"select={self.select!r}")
        return ", ".join([*parts, super().extra_repr()])
