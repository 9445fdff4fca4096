"""OrthogonalityRegularizer: the gap against the formula, SVD diagnostics, autocast, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import multiloss as ml
from multiloss.layers import OrthogonalityRegularizer, orthogonality_gap


def _gap_by_hand(w: np.ndarray) -> float:
    """Sum of squared entries of the smaller Gram matrix minus the identity."""
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return float(((gram - np.eye(len(gram))) ** 2).sum())


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), seed=st.integers(0, 999))
def test_gap_matches_the_formula_and_is_transpose_invariant(
    rows: int, cols: int, seed: int
) -> None:
    torch.manual_seed(seed)
    w = torch.randn(rows, cols, dtype=torch.float64)
    assert float(orthogonality_gap(w)) == pytest.approx(_gap_by_hand(w.numpy()), rel=1e-5)
    assert float(orthogonality_gap(w)) == pytest.approx(float(orthogonality_gap(w.T)), rel=1e-5)


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (4, 4)])
def test_orthogonal_matrices_have_no_gap(shape: tuple[int, int]) -> None:
    w = nn.init.orthogonal_(torch.empty(*shape))
    assert float(orthogonality_gap(w)) == pytest.approx(0.0, abs=1e-10)


def test_conv_kernels_are_flattened_per_output_channel() -> None:
    conv = nn.Conv2d(2, 3, 3)
    layer = OrthogonalityRegularizer(conv)
    layer(torch.randn(1, 2, 5, 5))
    expected = _gap_by_hand(conv.weight.detach().reshape(3, 18).numpy())
    assert float(layer.compute_aux_loss().detach()) == pytest.approx(expected, rel=1e-5)


def test_diagnostics_are_the_norm_and_the_condition_number() -> None:
    linear = nn.Linear(5, 3)
    layer = OrthogonalityRegularizer(linear)
    layer(torch.randn(2, 5))
    diagnostics = layer.aux_loss_diagnostics()
    w = linear.weight.detach().numpy()
    assert diagnostics["norm"] == pytest.approx(np.sqrt(_gap_by_hand(w)), rel=1e-5)
    assert diagnostics["condition_number"] == pytest.approx(np.linalg.cond(w), rel=1e-4)
    sigma = np.linalg.svd(w, compute_uv=False)
    assert diagnostics["sigma_max"] == pytest.approx(sigma.max(), rel=1e-5)
    assert diagnostics["sigma_min"] == pytest.approx(sigma.min(), rel=1e-5)


def test_gap_stays_in_float32_under_autocast() -> None:
    w = nn.init.orthogonal_(torch.empty(16, 16)) + 1e-3 * torch.randn(16, 16)
    reference = _gap_by_hand(w.double().numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gap = float(orthogonality_gap(w))
    assert gap == pytest.approx(reference, rel=1e-3)


def test_descending_the_penalty_makes_the_weight_orthogonal() -> None:
    linear = nn.Linear(6, 4, bias=False)
    layer = OrthogonalityRegularizer(linear)
    optimizer = torch.optim.SGD(linear.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        with ml.collect(layer) as book:
            layer(torch.randn(1, 6))
        book.total().backward()
        optimizer.step()
    assert layer.aux_loss_diagnostics()["condition_number"] == pytest.approx(1.0, abs=1e-3)


def test_the_module_runs_unchanged() -> None:
    linear = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    torch.testing.assert_close(OrthogonalityRegularizer(linear)(x), linear(x))


@pytest.mark.parametrize(
    ("module", "kwargs", "error", "match"),
    [
        (nn.Linear(3, 3), {"name": "bias"}, ValueError, r"`bias` is Tensor\(shape=\(3,\)"),
        (nn.Linear(3, 3), {"name": "kernel"}, ValueError, r"in Linear; `kernel` is None"),
        (nn.ReLU(), {}, ValueError, r"`name` of OrthogonalityRegularizer must name a weight"),
        ("linear", {}, TypeError, r"`module` of OrthogonalityRegularizer must be an nn.Module"),
        (nn.Linear(3, 3), {"name": ""}, ValueError, r"`name` of OrthogonalityRegularizer must be"),
    ],
)
def test_bad_arguments_are_named(module: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        OrthogonalityRegularizer(module, **kwargs)  # type: ignore[arg-type]


def test_orthogonality_gap_checks_its_weight() -> None:
    with pytest.raises(TypeError, match=r"`weight` of orthogonality_gap must be a floating-point"):
        orthogonality_gap("x")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"`weight` of orthogonality_gap must have 2 or more "
        r"dimensions .*; got shape \(4,\)",
    ):
        orthogonality_gap(torch.randn(4))
