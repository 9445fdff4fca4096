"""``ContrastiveHead``: a projection head and an InfoNCE / NT-Xent / supervised-contrastive loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multiloss._validation import check_choice, check_finite_float, check_int, describe
from multiloss.aux import AuxiliaryLossModule
from multiloss.layers.head import DroppedHead

__all__ = ["ContrastiveHead"]

_LOSSES = ("nt_xent", "info_nce")
# Wang & Isola (2020): alignment exponent alpha = 2, uniformity temperature t = 2.
_UNIFORMITY_T = 2.0

_Cache = tuple[Tensor, Tensor, int]  # normalized projections, identities, number of views


def _projector(in_features: int, hidden: int, out_features: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
    )


class ContrastiveHead(AuxiliaryLossModule):
    """Projection head plus a contrastive loss: similar inputs, similar representations.

    Call it with the representations of two views of the same examples (SimCLR: Chen et al.
    2020), with one view and ``labels`` (supervised contrastive: Khosla et al. 2020), or both;
    the representations pass through unchanged (one view as itself, two as a tuple). The head
    projects them (an MLP by default), L2-normalizes the projections and, with cosine
    similarities divided by ``temperature``, averages over anchors ``i`` that have positives

        ``-1/|P(i)| * sum_{p in P(i)} log( exp(s_ip) / sum_{a != i} exp(s_ia) )``,

    where the positives ``P(i)`` are the other views of the same example, and with ``labels``
    every other sample with the same label. With two views and no labels this is NT-Xent;
    ``loss="info_nce"`` instead contrasts each view only against the other view's batch
    (``N x N`` logits, both directions averaged, as in CPC and CLIP).

    Args:
        in_features: Width of the representation; builds the default projector
            ``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``.
        out_features: Width of the projection.
        hidden_features: Hidden width of the default projector (default ``in_features``).
        projector: A projector of your own instead (``nn.Identity()`` for none).
        temperature: Softmax temperature, > 0 (0.1 to 0.5 is usual).
        loss: ``"nt_xent"`` (every other sample is a candidate) or ``"info_nce"`` (only the
            other view's samples are).
        **kwargs: ``aux_loss_weight``, ``use_aux_loss``, ``accumulate_aux_loss``,
            ``aux_loss_schedule`` (see :class:`~multiloss.AuxiliaryLossModule`).

    Diagnostics (over the normalized projections): ``pos_sim`` and ``neg_sim`` (mean cosine
    similarity of positive and of negative pairs), ``alignment`` (mean ``||z_i - z_p||^2`` over
    positive pairs) and ``uniformity`` (``log mean exp(-2 ||z_i - z_j||^2)`` over distinct
    pairs, averaged over views), both from Wang & Isola (2020); ``top1`` (fraction of anchors
    whose most similar other sample is a positive).

    Raises:
        ValueError: The views' shapes differ, ``labels`` do not match the batch, or there is
            neither a second view nor labels.

    Example:
        >>> import torch, multiloss as ml
        >>> from multiloss.layers import ContrastiveHead
        >>> head = ContrastiveHead(16, 8, temperature=0.2)
        >>> head
        ContrastiveHead(
          temperature=0.2, loss='nt_xent', aux_loss_weight=1
          (projector): Sequential(
            (0): Linear(in_features=16, out_features=16, bias=True)
            (1): ReLU(inplace=True)
            (2): Linear(in_features=16, out_features=8, bias=True)
          )
        )
        >>> h1, h2 = torch.randn(6, 16), torch.randn(6, 16)
        >>> with ml.collect(head) as book:
        ...     out = head(h1, h2)
        >>> out[0] is h1, sorted(book)
        (True, ['nt_xent'])
        >>> sorted(head.aux_loss_diagnostics())
        ['alignment', 'neg_sim', 'pos_sim', 'top1', 'uniformity']
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int = 128,
        *,
        hidden_features: int | None = None,
        projector: nn.Module | None = None,
        temperature: float = 0.1,
        loss: str = "nt_xent",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if projector is not None:
            if in_features is not None or hidden_features is not None:
                raise ValueError(
                    "ContrastiveHead takes either `projector` or `in_features` (and "
                    f"`hidden_features`), not both; got projector={type(projector).__name__}, "
                    f"in_features={in_features!r}, hidden_features={hidden_features!r}"
                )
            if not isinstance(projector, nn.Module):
                raise TypeError(
                    f"`projector` of ContrastiveHead must be an nn.Module; got "
                    f"{describe(projector)}"
                )
            self.projector = projector
            #: The width the default projector expects (None: a projector of your own).
            self.in_features: int | None = None
        else:
            if in_features is None:
                raise ValueError(
                    "ContrastiveHead needs `in_features` (to build its projector) or a "
                    "`projector` module; got neither"
                )
            width = check_int(in_features, "`in_features` of ContrastiveHead", min_value=1)
            self.in_features = width
            hidden = width if hidden_features is None else hidden_features
            self.projector = _projector(
                width,
                check_int(hidden, "`hidden_features` of ContrastiveHead", min_value=1),
                check_int(out_features, "`out_features` of ContrastiveHead", min_value=1),
            )
        self.temperature = check_finite_float(
            temperature, "`temperature` of ContrastiveHead", min_value=0.0, strict_min=True
        )
        self.loss = check_choice(loss, "`loss` of ContrastiveHead", _LOSSES)
        self.aux_loss_name = self.loss

    def forward(
        self, view1: Tensor, view2: Tensor | None = None, *, labels: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        views = [view1] if view2 is None else [view1, view2]
        self._check(views, labels)
        if self.use_aux_loss:
            z = self.projector(torch.cat(views))
            z = F.normalize(z.float().reshape(z.shape[0], -1), dim=1)
            n = view1.shape[0]
            ids = labels.reshape(-1) if labels is not None else torch.arange(n, device=z.device)
            self.save_for_aux_loss((z, ids.repeat(len(views)), len(views)))
        return view1 if view2 is None else (view1, view2)

    def _check(self, views: list[Tensor], labels: Tensor | None) -> None:
        for name, view in zip(("view1", "view2"), views, strict=False):
            if not isinstance(view, Tensor) or not view.is_floating_point() or view.dim() < 2:
                raise TypeError(
                    f"`{name}` of ContrastiveHead must be a floating-point Tensor of shape "
                    f"(batch, features...); got {describe(view)}"
                )
        width = self.in_features
        if width is not None and views[0].shape[-1] != width:
            raise ValueError(
                f"`view1` of ContrastiveHead must have {width} features in its last dimension "
                f"(`in_features`={width}); got shape {tuple(views[0].shape)}"
            )
        if len(views) == 2 and views[0].shape != views[1].shape:
            raise ValueError(
                "the two views of ContrastiveHead must have the same shape; got `view1` "
                f"{tuple(views[0].shape)} and `view2` {tuple(views[1].shape)}"
            )
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.is_floating_point():
                raise TypeError(
                    f"`labels` of ContrastiveHead must be an integer Tensor; got {describe(labels)}"
                )
            if labels.numel() != views[0].shape[0] or labels.dim() > 1:
                raise ValueError(
                    f"`labels` of ContrastiveHead must have shape ({views[0].shape[0]},), one "
                    f"per example; got {tuple(labels.shape)}"
                )
        elif len(views) == 1:
            raise ValueError(
                "ContrastiveHead needs positives: pass a second view (head(view1, view2)) or "
                "`labels` (head(view, labels=y)); got one view and no labels"
            )
        if self.loss == "info_nce" and len(views) == 1:
            raise ValueError(
                "`loss`='info_nce' of ContrastiveHead contrasts one view against the other; "
                "pass two views, or use loss='nt_xent' for labels over one view"
            )

    def aux_loss_terms(self, cache: _Cache) -> Tensor:
        z, ids, _ = cache
        if self.loss == "info_nce":
            z1, z2 = z.chunk(2)
            id1, id2 = ids.chunk(2)
            forward = _contrast(z1 @ z2.T / self.temperature, id1[:, None] == id2[None, :])
            backward = _contrast(z2 @ z1.T / self.temperature, id2[:, None] == id1[None, :])
            return 0.5 * (forward + backward)
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        logits = (z @ z.T / self.temperature).masked_fill(eye, float("-inf"))
        positives = (ids[:, None] == ids[None, :]) & ~eye
        return _contrast(logits, positives)

    def aux_diagnostics(self, cache: _Cache) -> Mapping[str, float | Tensor]:
        z, ids, views = cache[0].detach(), cache[1], cache[2]
        cos = z @ z.T
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        positives = (ids[:, None] == ids[None, :]) & ~eye
        negatives = ~positives & ~eye
        pos_sim = (cos * positives).sum() / positives.sum().clamp_min(1)
        nearest = cos.masked_fill(eye, float("-inf")).argmax(1)
        uniformity = torch.stack([_uniformity(part) for part in z.chunk(views)]).mean()
        return {
            "pos_sim": pos_sim,
            "neg_sim": (cos * negatives).sum() / negatives.sum().clamp_min(1),
            # ||a - b||^2 = 2 - 2 cos(a, b) for unit vectors.
            "alignment": ((2.0 - 2.0 * cos) * positives).sum() / positives.sum().clamp_min(1),
            "uniformity": uniformity,
            "top1": positives.gather(1, nearest[:, None]).float().mean(),
        }

    def inference_module(self) -> nn.Module:
        """What replaces this head in the inference model: a pass-through of the views."""
        return DroppedHead("ContrastiveHead", passes=("view1", "view2"))

    def extra_repr(self) -> str:
        parts = [f"temperature={self.temperature:g}", f"loss={self.loss!r}"]
        return ", ".join([*parts, super().extra_repr()])


def _contrast(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over anchors with a positive of ``-mean_{p in P(i)} log softmax(logits_i)_p``."""
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(~positives, 0.0)
    count = positives.sum(1)
    per_anchor = -log_prob.sum(1) / count.clamp_min(1)
    has = (count > 0).float()
    # Anchors without a positive (a label seen once) do not count; none at all gives 0.
    return (per_anchor * has).sum() / has.sum().clamp_min(1.0)


def _uniformity(z: Tensor) -> Tensor:
    """``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` of unit vectors (Wang & Isola 2020)."""
    n = len(z)
    if n < 2:
        return torch.zeros((), device=z.device)
    distance = (2.0 - 2.0 * (z @ z.T)).clamp_min(0.0)
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    return torch.logsumexp(-_UNIFORMITY_T * distance[off], dim=0) - math.log(n * (n - 1))
