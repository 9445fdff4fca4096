"""Cases for the auxiliary-loss layers of ``multiloss.layers`` beyond MoE (issue 6)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multiloss.layers import (
    ActivationRegularizer,
    AuxiliaryHead,
    ContrastiveHead,
    EntropyRegularizer,
    GaussianKL,
    OrthogonalityRegularizer,
)
from tests.aux_properties import AuxCase


class _TupleOut(nn.Module):
    """Returns (activations, an integer side output), like modules with extra outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.linear(x))
        return h, (h > 0).sum(-1)


def _x(*shape: int) -> Any:
    return lambda: (torch.randn(*shape),)


def _activation(module: nn.Module | None = None, **fixed: Any) -> Any:
    return lambda **kwargs: ActivationRegularizer(module, **fixed, **kwargs)


def _fresh(factory: Any, **fixed: Any) -> Any:
    """A maker that builds a fresh inner module each time (so two layers do not share one)."""
    return lambda **kwargs: factory(**fixed, **kwargs)


def _head_call(layer: nn.Module, inputs: tuple[Any, ...]) -> Any:
    return layer(inputs[0], target=inputs[1])


def _contrast_call(layer: nn.Module, inputs: tuple[Any, ...]) -> Any:
    view1, view2, labels = inputs
    return layer(view1, view2, labels=labels)


def _kl_call(layer: nn.Module, inputs: tuple[Any, ...]) -> Any:
    return layer(*inputs)


def _masked_attention() -> tuple[torch.Tensor]:
    scores = torch.randn(2, 3, 4, 6)
    scores[..., 4:] = float("-inf")  # two masked keys per query
    return (torch.softmax(scores, dim=-1),)


def _score(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(prediction.squeeze(-1), target)


CASES = [
    # ActivationRegularizer: each penalty, wrapping and following, conv maps, tuple outputs.
    AuxCase(
        "activation-l1-wraps-linear",
        _fresh(lambda **k: ActivationRegularizer(nn.Linear(4, 6), penalty="l1", **k)),
        _x(3, 4),
    ),
    AuxCase("activation-l2-follows", _activation(penalty="l2"), _x(3, 6)),
    AuxCase(
        "activation-kl-tanh-relu",
        _fresh(
            lambda **k: ActivationRegularizer(
                nn.Sequential(nn.Linear(4, 6), nn.ReLU()), penalty="kl", rho=0.1, **k
            )
        ),
        _x(8, 4),
    ),
    AuxCase(
        "activation-kl-sigmoid-preactivation",
        _fresh(
            lambda **k: ActivationRegularizer(
                nn.Linear(4, 6), penalty="kl", rho=0.05, squash="sigmoid", **k
            )
        ),
        _x(8, 4),
    ),
    AuxCase(
        "activation-kl-none-sigmoid-units",
        _activation(nn.Sigmoid(), penalty="kl", rho=0.2, squash="none"),
        _x(8, 6),
    ),
    AuxCase(
        "activation-kl-conv-channels",
        _fresh(
            lambda **k: ActivationRegularizer(
                nn.Conv2d(2, 3, 3, padding=1), penalty="kl", rho=0.3, unit_dim=1, **k
            )
        ),
        _x(2, 2, 5, 5),
    ),
    AuxCase(
        "activation-select-from-tuple",
        _fresh(lambda **k: ActivationRegularizer(_TupleOut(), penalty="l1", select=0, **k)),
        _x(3, 4),
    ),
    # AuxiliaryHead: each built-in loss, a callable loss, a detached probe.
    AuxCase(
        "head-cross-entropy",
        _fresh(lambda **k: AuxiliaryHead(nn.Linear(6, 3), target="y", **k)),
        lambda: (torch.randn(5, 6), torch.randint(0, 3, (5,))),
        call=_head_call,
    ),
    AuxCase(
        "head-cross-entropy-soft-targets",
        _fresh(lambda **k: AuxiliaryHead(nn.Linear(6, 3), target="y", **k)),
        lambda: (torch.randn(5, 6), torch.softmax(torch.randn(5, 3), -1)),
        call=_head_call,
    ),
    AuxCase(
        "head-bce",
        _fresh(lambda **k: AuxiliaryHead(nn.Linear(6, 2), target=1, loss="bce", **k)),
        lambda: (torch.randn(5, 6), torch.randint(0, 2, (5, 2)).float()),
        call=_head_call,
    ),
    AuxCase(
        "head-mse",
        _fresh(lambda **k: AuxiliaryHead(nn.Linear(6, 2), target=1, loss="mse", **k)),
        lambda: (torch.randn(5, 6), torch.randn(5, 2)),
        call=_head_call,
    ),
    AuxCase(
        "head-l1-detached-probe",
        _fresh(lambda **k: AuxiliaryHead(nn.Linear(6, 2), target=1, loss="l1", detach=True, **k)),
        lambda: (torch.randn(5, 6), torch.randn(5, 2)),
        call=_head_call,
    ),
    AuxCase(
        "head-callable-loss",
        _fresh(lambda **k: AuxiliaryHead(nn.Linear(6, 1), target=1, loss=_score, **k)),
        lambda: (torch.randn(5, 6), torch.randn(5)),
        call=_head_call,
    ),
    # GaussianKL: plain, free bits, a latent with more than one dimension per example.
    AuxCase("gaussian-kl", GaussianKL, lambda: (torch.randn(6, 4), torch.randn(6, 4)), _kl_call),
    AuxCase(
        "gaussian-kl-free-bits",
        lambda **k: GaussianKL(free_bits=0.5, **k),
        lambda: (0.1 * torch.randn(6, 4), 0.1 * torch.randn(6, 4)),
        _kl_call,
    ),
    AuxCase(
        "gaussian-kl-sequence-latent",
        GaussianKL,
        lambda: (torch.randn(3, 5, 2), torch.randn(3, 5, 2)),
        _kl_call,
    ),
    # EntropyRegularizer: both directions, probabilities with masking, batch entropy.
    AuxCase("entropy-maximize", lambda **k: EntropyRegularizer(mode="maximize", **k), _x(5, 4)),
    AuxCase("entropy-minimize", lambda **k: EntropyRegularizer(mode="minimize", **k), _x(5, 4)),
    AuxCase(
        "entropy-masked-attention",
        lambda **k: EntropyRegularizer(mode="maximize", from_logits=False, **k),
        _masked_attention,
    ),
    AuxCase(
        "entropy-batch-maximize-dim1",
        lambda **k: EntropyRegularizer(mode="maximize", dim=1, over="batch", **k),
        _x(5, 4, 2),
    ),
    # ContrastiveHead: NT-Xent, supervised over one and two views, InfoNCE, own projector.
    AuxCase(
        "contrastive-nt-xent",
        _fresh(lambda **k: ContrastiveHead(6, 4, temperature=0.5, **k)),
        lambda: (torch.randn(5, 6), torch.randn(5, 6), None),
        call=_contrast_call,
    ),
    AuxCase(
        "contrastive-supervised-one-view",
        _fresh(lambda **k: ContrastiveHead(6, 4, **k)),
        lambda: (torch.randn(8, 6), None, torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])),
        call=_contrast_call,
    ),
    AuxCase(
        "contrastive-supervised-two-views",
        _fresh(lambda **k: ContrastiveHead(6, 4, hidden_features=5, **k)),
        lambda: (torch.randn(6, 6), torch.randn(6, 6), torch.tensor([0, 1, 0, 2, 1, 2])),
        call=_contrast_call,
    ),
    AuxCase(
        "contrastive-info-nce-own-projector",
        _fresh(lambda **k: ContrastiveHead(projector=nn.Linear(6, 3), loss="info_nce", **k)),
        lambda: (torch.randn(5, 6), torch.randn(5, 6), None),
        call=_contrast_call,
    ),
    # OrthogonalityRegularizer: tall and wide weights, a conv kernel, an RNN's named weight.
    AuxCase(
        "orthogonality-tall-linear",
        _fresh(lambda **k: OrthogonalityRegularizer(nn.Linear(3, 6), **k)),
        _x(2, 3),
    ),
    AuxCase(
        "orthogonality-wide-linear",
        _fresh(lambda **k: OrthogonalityRegularizer(nn.Linear(6, 3), **k)),
        _x(2, 6),
    ),
    AuxCase(
        "orthogonality-conv",
        _fresh(lambda **k: OrthogonalityRegularizer(nn.Conv2d(2, 4, 3), **k)),
        _x(1, 2, 5, 5),
    ),
    AuxCase(
        "orthogonality-rnn-hidden",
        _fresh(lambda **k: OrthogonalityRegularizer(nn.RNN(3, 4), name="weight_hh_l0", **k)),
        _x(2, 1, 3),
    ),
]
