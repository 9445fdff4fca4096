"""``OrthogonalityRegularizer``: soft orthogonality ``||W W^T - I||_F^2`` of a module's weight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from multiloss._validation import check_float_tensor, check_loss_name, describe
from multiloss.aux import AuxiliaryLossModule

__all__ = ["OrthogonalityRegularizer", "orthogonality_gap"]


def _matrix(weight: Tensor) -> Tensor:
    """The weight as a matrix: one row per output (a conv kernel flattens to a row)."""
    return weight.reshape(weight.shape[0], -1) if weight.dim() != 2 else weight


def orthogonality_gap(weight: Tensor) -> Tensor:
    """``||W W^T - I||_F^2`` for a wide ``W`` (rows <= columns), ``||W^T W - I||_F^2`` for a
    tall one, computed in float32; a weight of more than two dimensions (a conv kernel
    ``(out, in, *kernel)``) is the matrix ``(out, in * prod(kernel))``.

    The smaller Gram matrix is the one that can equal the identity: ``m`` rows of length ``n``
    can be orthonormal only when ``m <= n``, and then ``W W^T = I_m``; otherwise the columns
    can, and ``W^T W = I_n``.

    Example:
        >>> import torch
        >>> float(orthogonality_gap(torch.eye(3)[:2]))  # two orthonormal rows
        0.0
        >>> float(orthogonality_gap(2 * torch.eye(2)))  # ||4 I - I||^2 = 2 * 3^2
        18.0
    """
    check_float_tensor(weight, "`weight` of orthogonality_gap")
    if weight.dim() < 2:
        raise ValueError(
            "`weight` of orthogonality_gap must have 2 or more dimensions (a matrix, or a conv "
            f"kernel (out, in, *kernel)); got shape {tuple(weight.shape)}"
        )
    matrix = _matrix(weight).float()
    rows, cols = matrix.shape
    # Keep the Gram product out of autocast: in bfloat16 its rounding error (~1e-2) is the
    # size of the very deviations the penalty measures.
    with torch.autocast(matrix.device.type, enabled=False):
        gram = matrix @ matrix.T if rows <= cols else matrix.T @ matrix
        eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
        return (gram - eye).pow(2).sum()


class OrthogonalityRegularizer(AuxiliaryLossModule):
    """Wraps a module and keeps its weight close to orthogonal (a soft constraint).

    The raw term ``orthogonality`` is :func:`orthogonality_gap` of the wrapped module's
    ``weight`` (or the parameter named ``name``): ``||W W^T - I||_F^2`` when ``W`` is wide,
    ``||W^T W - I||_F^2`` when tall, with conv kernels flattened to ``(out, in * kh * kw)``
    (Bansal et al. 2018 call this soft orthogonality, SO). Orthogonal weights preserve norms,
    which keeps signals and gradients from exploding or vanishing through deep stacks.
    The module runs unchanged; the penalty is computed once per call inside a collector.

    Args:
        module: The module whose weight is regularized (Linear, Conv, Embedding, ...).
        name: The name of the parameter (``"weight"``; ``"weight_hh_l0"`` for an RNN).
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` (see :class:`~multiloss.AuxiliaryLossModule`).

    Diagnostics: ``norm`` (``||W W^T - I||_F``, the square root of the term),
    ``condition_number`` (``sigma_max / sigma_min``), ``sigma_max`` and ``sigma_min``. The
    singular values need an SVD, computed only when diagnostics are read.

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import OrthogonalityRegularizer
        >>> linear = torch.nn.Linear(4, 4, bias=False)
        >>> _ = torch.nn.init.orthogonal_(linear.weight)
        >>> layer = OrthogonalityRegularizer(linear, aux_loss_weight=1e-2)
        >>> layer
        OrthogonalityRegularizer(
          aux_loss_weight=0.01
          (module): Linear(in_features=4, out_features=4, bias=False)
        )
        >>> with ml.collect(layer) as book:
        ...     y = layer(torch.randn(2, 4))
        >>> float(book["orthogonality"].detach()) < 1e-10
        True
        >>> round(layer.aux_loss_diagnostics()["condition_number"], 4)
        1.0
    """

    aux_loss_name = "orthogonality"

    def __init__(self, module: nn.Module, *, name: str = "weight", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"`module` of OrthogonalityRegularizer must be an nn.Module; got {describe(module)}"
            )
        self.name = check_loss_name(name, "`name` of OrthogonalityRegularizer")
        weight = getattr(module, name, None)
        if not isinstance(weight, Tensor) or weight.dim() < 2:
            raise ValueError(
                f"`name` of OrthogonalityRegularizer must name a weight of at least two "
                f"dimensions in {type(module).__name__}; `{name}` is {describe(weight)}"
            )
        self.module = module

    @property
    def weight(self) -> Tensor:
        """The regularized weight (looked up on each call: it may be re-registered)."""
        weight: Tensor = getattr(self.module, self.name)
        return weight

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.use_aux_loss:
            # In a tuple: a bare Parameter assigned to the cache attribute would be registered
            # as a parameter of this layer by nn.Module.__setattr__.
            self.save_for_aux_loss((self.weight,))
        return self.module(*args, **kwargs)

    def aux_loss_terms(self, cache: tuple[Tensor]) -> Tensor:
        return orthogonality_gap(cache[0])

    def aux_diagnostics(self, cache: tuple[Tensor]) -> Mapping[str, float | Tensor]:
        weight = cache[0].detach()
        with torch.no_grad():
            sigma = torch.linalg.svdvals(_matrix(weight).float())
            sigma_max, sigma_min = sigma.max(), sigma.min()
            return {
                "norm": orthogonality_gap(weight).sqrt(),
                # A singular W has an infinite condition number; report a huge finite one.
                "condition_number": sigma_max / sigma_min.clamp_min(1e-12),
                "sigma_max": sigma_max,
                "sigma_min": sigma_min,
            }

    def inference_module(self) -> nn.Module:
        """What replaces this layer in the inference model: the wrapped module itself."""
        return self.module

    def extra_repr(self) -> str:
        parts = [f"name={self.name!r}"] if self.name != "weight" else []
        return ", ".join([*parts, super().extra_repr()])
