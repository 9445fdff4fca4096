"""Balancing losses against hand-computed values and their defining properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.layers import MixtureOfExperts
from multiloss.layers.moe.losses import (
    balance_loss,
    expert_counts,
    mean_probs,
    sequence_balance_loss,
    z_loss,
)


def _cyclic_layer(num_experts: int, top_k: int) -> tuple[MixtureOfExperts, torch.Tensor]:
    """A layer and E tokens whose logits are the E rotations of one decreasing vector.

    Token t prefers experts t, t+1, ..., so every expert gets exactly K assignments and the
    mean router probability is 1/E for every expert: perfect balance.
    """
    layer = MixtureOfExperts(num_experts, 8, num_experts, top_k, balance={"switch": 1.0})
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(num_experts))
    base = torch.linspace(2.0, -2.0, num_experts)
    tokens = torch.stack([base.roll(t) for t in range(num_experts)])
    return layer, tokens


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_switch_loss_is_exactly_one_at_perfect_balance_for_any_top_k(top_k: int) -> None:
    layer, tokens = _cyclic_layer(8, top_k)
    layer(tokens)
    terms = layer.aux_loss_terms(layer._aux_cache)
    counts = layer._aux_cache.routed
    assert counts.tolist() == [top_k] * 8
    assert float(terms["switch"].detach()) == pytest.approx(1.0, abs=1e-6)


def test_switch_loss_by_hand() -> None:
    # 2 tokens, 2 experts, top-1: both go to expert 0; P = (0.7, 0.3) on average.
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]])
    chosen = torch.tensor([[0], [0]])
    counts = expert_counts(chosen, None, 2)
    assert counts.tolist() == [2, 0]
    loss = balance_loss(counts, mean_probs(probs, None))
    assert float(loss) == pytest.approx(2 * (1.0 * 0.7 + 0.0 * 0.3))


def test_padding_is_excluded_from_counts_and_means() -> None:
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.0, 1.0]])
    chosen = torch.tensor([[0], [0], [1]])
    valid = torch.tensor([True, True, False])
    assert expert_counts(chosen, valid, 2).tolist() == [2, 0]
    torch.testing.assert_close(mean_probs(probs, valid), torch.tensor([0.7, 0.3]))


def test_only_padding_gives_zero_losses() -> None:
    probs = torch.full((3, 4), 0.25)
    chosen = torch.zeros(3, 1, dtype=torch.long)
    valid = torch.zeros(3, dtype=torch.bool)
    assert float(balance_loss(expert_counts(chosen, valid, 4), mean_probs(probs, valid))) == 0
    assert float(z_loss(torch.randn(3, 4), valid)) == 0
    assert float(sequence_balance_loss(probs, chosen, valid, 3)) == 0


def test_sequence_loss_by_hand() -> None:
    # Two sequences of 2 tokens, 2 experts, top-1.
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    chosen = torch.tensor([[0], [0], [0], [1]])
    # Sequence 1: f = (1, 0), P = (0.8, 0.2) -> 2 * 0.8 = 1.6
    # Sequence 2: f = (0.5, 0.5), P = (0.3, 0.7) -> 2 * (0.15 + 0.35) = 1.0
    loss = sequence_balance_loss(probs, chosen, None, 2)
    assert float(loss) == pytest.approx((1.6 + 1.0) / 2)
    # Masking the last token: sequence 2 is f = (1, 0), P = (0.5, 0.5) -> 1.0
    valid = torch.tensor([True, True, True, False])
    assert float(sequence_balance_loss(probs, chosen, valid, 2)) == pytest.approx((1.6 + 1.0) / 2)
    # Masking a whole sequence removes it from the average.
    valid = torch.tensor([True, True, False, False])
    assert float(sequence_balance_loss(probs, chosen, valid, 2)) == pytest.approx(1.6)


def test_sequence_loss_of_the_layer_averages_per_sequence_switch_losses() -> None:
    layer = MixtureOfExperts(8, 16, 4, balance={"sequence": 1.0, "switch": 1.0})
    x = torch.randn(3, 6, 8)
    layer.eval()
    per_sequence = []
    for row in x:
        layer(row[None])
        per_sequence.append(layer.aux_loss_terms(layer._aux_cache)["switch"])
    layer(x)
    terms = layer.aux_loss_terms(layer._aux_cache)
    torch.testing.assert_close(terms["sequence"], torch.stack(per_sequence).mean())


def test_z_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (math.log(2.0) ** 2 + math.log(math.e + math.e**2) ** 2) / 2
    assert float(z_loss(logits, None)) == pytest.approx(expected, rel=1e-6)
    assert float(z_loss(logits, torch.tensor([True, False]))) == pytest.approx(math.log(2) ** 2)


@settings(max_examples=40, deadline=None)
@given(
    experts=st.integers(2, 8),
    tokens=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_balance_loss_is_permutation_invariant_and_at_least_one_when_f_equals_p(
    experts: int, tokens: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    probs = torch.rand(tokens, experts, generator=generator).softmax(-1)
    counts = torch.randint(0, 5, (experts,), generator=generator)
    p_mean = mean_probs(probs, None)
    perm = torch.randperm(experts, generator=generator)
    torch.testing.assert_close(
        balance_loss(counts, p_mean), balance_loss(counts[perm], p_mean[perm])
    )
    # Counts proportional to P give E * sum P_i^2 >= 1 (Cauchy-Schwarz): 1 is the minimum.
    assert float(balance_loss(p_mean * 1000, p_mean)) >= 1.0 - 1e-5
