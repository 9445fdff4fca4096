"""``GaussianKL``: the KL term of a diagonal-Gaussian latent, with free bits and diagnostics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from multiloss._validation import (
    check_bool,
    check_finite_float,
    check_float_tensor,
    check_int,
)
from multiloss.aux import AuxiliaryLossModule

__all__ = ["GaussianKL", "active_units"]


def active_units(mean: Tensor, threshold: float = 0.01) -> Tensor:
    """How many latent dimensions are active (Burda et al. 2015), as a 0-dim tensor.

    A dimension ``j`` is active when ``Var_x(E_q[z_j | x]) > threshold``: the posterior mean
    moves with the input. The variance is taken over the first dimension of ``mean`` (the
    examples; population variance), every other dimension is a latent dimension. Measure it
    over a whole evaluation set for a stable count.

    Example:
        >>> import torch
        >>> mean = torch.stack([torch.randn(100), torch.full((100,), 0.3)], dim=1)
        >>> int(active_units(mean))  # the constant dimension carries no information
        1
    """
    check_float_tensor(mean, "`mean` of active_units")
    if mean.dim() < 2:
        raise ValueError(
            "`mean` of active_units must have shape (examples, latent dims...); got shape "
            f"{tuple(mean.shape)}"
        )
    threshold = check_finite_float(threshold, "`threshold` of active_units", min_value=0.0)
    flat = mean.detach().float().reshape(mean.shape[0], -1)
    return (flat.var(0, correction=0) > threshold).sum()


class GaussianKL(AuxiliaryLossModule):
    """``KL(N(mean, exp(logvar)) || N(0, I))`` of a variational latent, as a side loss.

    Call it with the encoder's ``mean`` and ``logvar``; it returns the latent: a
    reparameterized sample ``mean + exp(logvar / 2) * eps`` in training mode (when ``sample``)
    and ``mean`` in eval mode. The first dimension is the batch; every other dimension is a
    latent dimension. The raw term is the KL summed over latent dimensions and averaged over
    the batch (the ELBO's KL per example):

        ``kl = sum_j max(free_bits, mean_batch KL_j)``,
        ``KL_j = 0.5 * (mean_j^2 + exp(logvar_j) - 1 - logvar_j)``.

    **Free bits** (Kingma et al. 2016, per dimension): a dimension whose batch-averaged KL is
    below ``free_bits`` nats costs the constant ``free_bits``, so the optimizer gets no
    incentive to push it further towards the prior; this keeps latent units from collapsing.
    **KL annealing** (Bowman et al. 2016) is a schedule on the weight:
    ``aux_loss_schedule=KLAnneal(10_000)`` (``cycles=4`` for the cyclical form of Fu et al.
    2019).

    Args:
        free_bits: Nats per latent dimension below which the KL is not penalized (>= 0).
        sample: Return a reparameterized sample in training mode (else always ``mean``).
        active_threshold: Variance of the posterior mean above which a unit is active.
        per_dim_limit: Report ``kl/<j>`` for every latent dimension when there are at most
            this many (summary statistics are always reported).
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` (see :class:`~multiloss.AuxiliaryLossModule`).

    Diagnostics (from the last batch): ``kl`` (the KL without free bits), ``kl/min``,
    ``kl/max`` (over dimensions), ``kl/<j>`` per dimension (see ``per_dim_limit``),
    ``below_free_bits`` (dimensions under the floor, which get no KL gradient),
    ``active_units`` and ``active_fraction`` (see :func:`active_units`; batch estimates).

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import GaussianKL
        >>> kl = GaussianKL(free_bits=0.25)
        >>> kl
        GaussianKL(free_bits=0.25, aux_loss_weight=1)
        >>> mean, logvar = torch.zeros(4, 2), torch.zeros(4, 2)  # exactly the prior
        >>> with ml.collect(kl) as book:
        ...     z = kl(mean, logvar)
        >>> z.shape, float(book["kl"])  # KL is 0, the floor is 2 dims x 0.25 nats
        (torch.Size([4, 2]), 0.5)
        >>> kl.aux_loss_diagnostics()["kl"]
        0.0
    """

    aux_loss_name = "kl"

    def __init__(
        self,
        *,
        free_bits: float = 0.0,
        sample: bool = True,
        active_threshold: float = 0.01,
        per_dim_limit: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.free_bits = check_finite_float(free_bits, "`free_bits` of GaussianKL", min_value=0.0)
        self.sample = check_bool(sample, "`sample` of GaussianKL")
        self.active_threshold = check_finite_float(
            active_threshold, "`active_threshold` of GaussianKL", min_value=0.0
        )
        self.per_dim_limit = check_int(per_dim_limit, "`per_dim_limit` of GaussianKL", min_value=0)

    def forward(self, mean: Tensor, logvar: Tensor) -> Tensor:
        check_float_tensor(mean, "`mean` of GaussianKL")
        check_float_tensor(logvar, "`logvar` of GaussianKL")
        if mean.shape != logvar.shape or mean.dim() < 2:
            raise ValueError(
                "`mean` and `logvar` of GaussianKL must have the same shape (batch, latent "
                f"dims...); got {tuple(mean.shape)} and {tuple(logvar.shape)}"
            )
        if self.use_aux_loss:
            self.save_for_aux_loss((mean, logvar))
        if self.sample and self.training:
            return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return mean

    @staticmethod
    def kl_per_dim(mean: Tensor, logvar: Tensor) -> Tensor:
        """KL of each latent dimension, averaged over the batch: shape ``(latent dims,)``."""
        mean = mean.float().reshape(mean.shape[0], -1)
        logvar = logvar.float().reshape(logvar.shape[0], -1)
        kl = 0.5 * (mean.pow(2) + torch.exp(logvar) - 1.0 - logvar)
        # Each element is >= 0 in exact arithmetic; rounding can leave -1e-8 near the prior.
        return kl.clamp_min(0.0).mean(0)

    def aux_loss_terms(self, cache: tuple[Tensor, Tensor]) -> Tensor:
        per_dim = self.kl_per_dim(*cache)
        if self.free_bits > 0.0:
            per_dim = per_dim.clamp_min(self.free_bits)
        return per_dim.sum()

    def aux_diagnostics(self, cache: tuple[Tensor, Tensor]) -> Mapping[str, float | Tensor]:
        mean, logvar = cache[0].detach(), cache[1].detach()
        per_dim = self.kl_per_dim(mean, logvar)
        active = active_units(mean, self.active_threshold)
        diagnostics: dict[str, float | Tensor] = {
            "kl": per_dim.sum(),
            "kl/min": per_dim.min(),
            "kl/max": per_dim.max(),
            "below_free_bits": (per_dim < self.free_bits).sum().float(),
            "active_units": active.float(),
            "active_fraction": active.float() / per_dim.numel(),
        }
        if per_dim.numel() <= self.per_dim_limit:
            diagnostics.update({f"kl/{j}": value for j, value in enumerate(per_dim.unbind())})
        return diagnostics

    def inference_module(self) -> GaussianKL:
        """The latent stays in the inference model (it returns ``mean`` in eval mode)."""
        return self

    def extra_repr(self) -> str:
        parts = [f"free_bits={self.free_bits:g}"] if self.free_bits else []
        if not self.sample:
            parts.append("sample=False")
        if self.active_threshold != 0.01:
            parts.append(f"active_threshold={self.active_threshold:g}")
        return ", ".join([*parts, super().extra_repr()])
