"""GaussianKL: KL against torch.distributions, free bits, active units, sampling, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

import multiloss as ml
from multiloss.layers import GaussianKL, active_units
from multiloss.schedules import KLAnneal


def _reference_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    posterior = Normal(mean, torch.exp(0.5 * logvar))
    prior = Normal(torch.zeros_like(mean), torch.ones_like(mean))
    return kl_divergence(posterior, prior).reshape(mean.shape[0], -1).mean(0)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 6), dims=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_kl_matches_torch_distributions(batch: int, dims: int, seed: int) -> None:
    torch.manual_seed(seed)
    mean, logvar = 2 * torch.randn(batch, dims), torch.randn(batch, dims)
    layer = GaussianKL()
    layer(mean, logvar)
    expected = _reference_per_dim(mean, logvar)
    torch.testing.assert_close(layer.compute_aux_loss(), expected.sum())
    assert float(layer.compute_aux_loss()) >= 0.0


def test_free_bits_floor_each_dimension_and_stop_its_gradient() -> None:
    mean = torch.tensor([[0.1, 2.0], [-0.1, 1.0]], requires_grad=True)
    logvar = torch.zeros(2, 2, requires_grad=True)
    layer = GaussianKL(free_bits=0.5)
    layer(mean, logvar)
    per_dim = _reference_per_dim(mean.detach(), logvar.detach())
    assert float(per_dim[0]) < 0.5 < float(per_dim[1])
    loss = layer.compute_aux_loss()
    assert float(loss.detach()) == pytest.approx(0.5 + float(per_dim[1]))
    loss.backward()
    assert mean.grad is not None
    assert float(mean.grad[:, 0].abs().sum()) == 0.0  # under the floor: no pull to the prior
    assert float(mean.grad[:, 1].abs().sum()) > 0.0
    assert layer.aux_loss_diagnostics()["below_free_bits"] == 1.0


def test_active_units_follow_burda_definition() -> None:
    torch.manual_seed(0)
    mean = torch.stack([torch.randn(200), 0.05 * torch.randn(200), torch.full((200,), 3.0)], dim=1)
    # By hand: population variance of each column against 0.01.
    variances = [float(((c - c.mean()) ** 2).mean()) for c in mean.T]
    assert variances[0] > 0.01 > variances[1]
    assert int(active_units(mean)) == 1
    assert int(active_units(mean, threshold=1e-4)) == 2


def test_diagnostics_report_per_dimension_kl_up_to_the_limit() -> None:
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    layer = GaussianKL(per_dim_limit=3)
    layer(mean, logvar)
    diagnostics = layer.aux_loss_diagnostics()
    expected = _reference_per_dim(mean, logvar)
    for j in range(3):
        assert diagnostics[f"kl/{j}"] == pytest.approx(float(expected[j]), rel=1e-5)
    assert diagnostics["kl"] == pytest.approx(float(expected.sum()), rel=1e-5)
    assert diagnostics["kl/max"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert diagnostics["active_fraction"] == diagnostics["active_units"] / 3
    small = GaussianKL(per_dim_limit=2)
    small(mean, logvar)
    assert "kl/0" not in small.aux_loss_diagnostics()


def test_training_mode_samples_with_the_posterior_moments_eval_returns_the_mean() -> None:
    mean = torch.tensor([1.0, -2.0]).expand(20000, 2)
    logvar = torch.log(torch.tensor([0.25, 4.0])).expand(20000, 2)
    layer = GaussianKL()
    z = layer(mean, logvar)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 2.0]), atol=0.05, rtol=0)
    layer.eval()
    assert layer(mean, logvar) is mean
    assert GaussianKL(sample=False)(mean, logvar) is mean


def test_kl_anneal_schedule_sets_the_weight() -> None:
    layer = GaussianKL(aux_loss_weight=2.0, aux_loss_schedule=KLAnneal(100, ratio=0.5))
    weights = []
    for step in (0, 25, 50, 1000):
        with ml.collect(layer, step=step) as book:
            layer(torch.randn(2, 3), torch.randn(2, 3))
        weights.append(book.weights["kl"])
    assert weights == pytest.approx([0.0, 1.0, 2.0, 2.0])


@pytest.mark.parametrize(
    ("mean", "logvar", "error", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), ValueError, r"must have the same shape .* \(2, 4\)"),
        (torch.zeros(3), torch.zeros(3), ValueError, r"\(batch, latent dims...\); got \(3,\)"),
        ([0.0], torch.zeros(2, 3), TypeError, r"`mean` of GaussianKL must be a floating-point"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), TypeError, r"`logvar` of"),
    ],
)
def test_bad_inputs_are_named(mean: object, logvar: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        GaussianKL()(mean, logvar)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"free_bits": -0.1}, ValueError, r"`free_bits` of GaussianKL must be >= 0"),
        ({"sample": "yes"}, TypeError, r"`sample` of GaussianKL must be a bool"),
        ({"active_threshold": float("nan")}, ValueError, r"`active_threshold` of GaussianKL"),
        ({"per_dim_limit": -1}, ValueError, r"`per_dim_limit` of GaussianKL must be >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        GaussianKL(**kwargs)  # type: ignore[arg-type]


def test_active_units_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"`mean` of active_units must be a floating-point Tensor"):
        active_units("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`mean` of active_units must have shape \(examples, "):
        active_units(torch.randn(5))
    with pytest.raises(ValueError, match=r"`threshold` of active_units must be >= 0.0; got -1"):
        active_units(torch.randn(5, 2), threshold=-1)
