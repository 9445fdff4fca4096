"""ContrastiveHead: losses against naive loops and cross entropy, Wang & Isola metrics, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from multiloss.layers import ContrastiveHead


def _naive_supcon(z: torch.Tensor, ids: list[int], temperature: float) -> float:
    """Khosla et al. (2020) L_out by loops; with one positive per anchor it is NT-Xent."""
    n = len(ids)
    sim = [[float(z[i] @ z[j]) / temperature for j in range(n)] for i in range(n)]
    losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and ids[p] == ids[i]]
        if not positives:
            continue
        log_norm = math.log(sum(math.exp(sim[i][a]) for a in range(n) if a != i))
        losses.append(-sum(sim[i][p] - log_norm for p in positives) / len(positives))
    return sum(losses) / len(losses) if losses else 0.0


def _identity_head(temperature: float = 0.5, loss: str = "nt_xent") -> ContrastiveHead:
    return ContrastiveHead(projector=nn.Identity(), temperature=temperature, loss=loss)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), temperature=st.floats(0.05, 2.0), seed=st.integers(0, 999))
def test_nt_xent_matches_a_naive_loop(n: int, temperature: float, seed: int) -> None:
    torch.manual_seed(seed)
    v1, v2 = torch.randn(n, 3), torch.randn(n, 3)
    head = _identity_head(temperature)
    head(v1, v2)
    z = F.normalize(torch.cat([v1, v2]), dim=1)
    expected = _naive_supcon(z, list(range(n)) * 2, temperature)
    # float32 logits of size up to 1 / temperature = 20: a near-zero loss (log of 1 + tiny)
    # carries an absolute rounding error of a few 1e-8 (n=2, temperature 0.05, seed 2: 2e-8).
    assert float(head.compute_aux_loss()) == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("two_views", [False, True])
def test_supervised_contrastive_matches_a_naive_loop(two_views: bool) -> None:
    v1, v2 = torch.randn(7, 4), torch.randn(7, 4)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # label 3 has no positive with one view
    head = _identity_head(0.2)
    head(v1, v2 if two_views else None, labels=labels)
    z = F.normalize(torch.cat([v1, v2]) if two_views else v1, dim=1)
    ids = labels.tolist() * (2 if two_views else 1)
    assert float(head.compute_aux_loss()) == pytest.approx(_naive_supcon(z, ids, 0.2), rel=1e-5)


def test_info_nce_is_cross_entropy_over_the_other_views_batch() -> None:
    v1, v2 = torch.randn(5, 4), torch.randn(5, 4)
    head = _identity_head(0.1, loss="info_nce")
    head(v1, v2)
    z1, z2 = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
    targets = torch.arange(5)
    expected = 0.5 * (
        F.cross_entropy(z1 @ z2.T / 0.1, targets) + F.cross_entropy(z2 @ z1.T / 0.1, targets)
    )
    torch.testing.assert_close(head.compute_aux_loss(), expected)


def test_alignment_and_uniformity_follow_wang_and_isola() -> None:
    v1, v2 = torch.randn(6, 3), torch.randn(6, 3)
    head = _identity_head()
    head(v1, v2)
    diagnostics = head.aux_loss_diagnostics()
    z1, z2 = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
    # The reference code of Wang & Isola (2020), written out.
    alignment = (z1 - z2).norm(dim=1).pow(2).mean()
    uniformity = [torch.pdist(z, p=2).pow(2).mul(-2).exp().mean().log() for z in (z1, z2)]
    assert diagnostics["alignment"] == pytest.approx(float(alignment), rel=1e-5)
    assert diagnostics["uniformity"] == pytest.approx(float(sum(uniformity) / 2), rel=1e-5)
    assert diagnostics["pos_sim"] == pytest.approx(float((z1 * z2).sum(1).mean()), rel=1e-5)
    z = torch.cat([z1, z2])
    negatives = [
        float(z[i] @ z[j]) for i in range(12) for j in range(12) if j not in (i, (i + 6) % 12)
    ]
    assert diagnostics["neg_sim"] == pytest.approx(sum(negatives) / len(negatives), rel=1e-5)


def test_identical_views_are_perfectly_aligned_and_retrieved() -> None:
    v = torch.randn(5, 4)
    head = _identity_head()
    head(v, v.clone())
    diagnostics = head.aux_loss_diagnostics()
    assert diagnostics["alignment"] == pytest.approx(0.0, abs=1e-6)
    assert diagnostics["pos_sim"] == pytest.approx(1.0, abs=1e-6)
    assert diagnostics["top1"] == 1.0


def test_views_pass_through_and_the_projector_runs_only_when_the_loss_is_on() -> None:
    head = ContrastiveHead(4, 2)
    v1, v2 = torch.randn(3, 4), torch.randn(3, 4)
    assert head(v1, v2) == (v1, v2)
    assert head(v1, labels=torch.tensor([0, 0, 1])) is v1
    head.use_aux_loss = False
    head.projector = None  # type: ignore[assignment]  # would fail if it ran
    assert head(v1, v2) == (v1, v2)


def test_gradient_reaches_the_encoder_through_the_projection() -> None:
    encoder = nn.Linear(4, 4)
    head = ContrastiveHead(4, 3)
    x = torch.randn(6, 4)
    head(encoder(x), encoder(x + 0.1 * torch.randn(6, 4)))
    head.compute_aux_loss().backward()
    assert encoder.weight.grad is not None
    assert float(encoder.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_temperature_must_be_positive(temperature: float) -> None:
    with pytest.raises(ValueError, match=r"`temperature` of ContrastiveHead must be > 0"):
        ContrastiveHead(4, temperature=temperature)


def test_mismatched_view_shapes_are_an_error() -> None:
    with pytest.raises(
        ValueError, match=r"same shape; got `view1` \(8, 64\) and `view2` \(8, 32\)"
    ):
        ContrastiveHead(64)(torch.randn(8, 64), torch.randn(8, 32))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.randn(4, 3),), {}, ValueError, r"needs positives: pass a second view"),
        (
            (torch.randn(4, 3),),
            {"labels": torch.zeros(3, dtype=torch.long)},
            ValueError,
            r"`labels` of ContrastiveHead must have shape \(4,\)",
        ),
        ((torch.randn(4, 3),), {"labels": torch.zeros(4)}, TypeError, r"integer Tensor"),
        (
            (torch.randn(4),),
            {"labels": torch.zeros(4, dtype=torch.long)},
            TypeError,
            r"`view1` of ContrastiveHead must be a floating-point Tensor of shape \(batch",
        ),
    ],
)
def test_bad_inputs_are_named(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ContrastiveHead(3)(*args, **kwargs)


def test_info_nce_needs_two_views() -> None:
    head = ContrastiveHead(3, loss="info_nce")
    with pytest.raises(ValueError, match=r"`loss`='info_nce' .* pass two views"):
        head(torch.randn(4, 3), labels=torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, r"needs `in_features` .* or a `projector` module; got neither"),
        ({"in_features": 4, "projector": nn.Identity()}, ValueError, r"either `projector` or"),
        ({"in_features": 0}, ValueError, r"`in_features` of ContrastiveHead must be >= 1"),
        ({"in_features": 4, "loss": "triplet"}, ValueError, r"one of \{'nt_xent', 'info_nce'\}"),
        ({"projector": "mlp"}, TypeError, r"`projector` of ContrastiveHead must be an nn.Module"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ContrastiveHead(**kwargs)


def test_views_of_the_wrong_width_name_in_features() -> None:
    with pytest.raises(
        ValueError,
        match=r"`view1` of ContrastiveHead must have 3 features in its last dimension "
        r"\(`in_features`=3\); got shape \(4, 7\)",
    ):
        ContrastiveHead(3, 2)(torch.randn(4, 7), torch.randn(4, 7))
