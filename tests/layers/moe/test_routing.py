"""The router: float32 under autocast, gates, bias for selection only, sigmoid scores, jitter."""

from __future__ import annotations

import pytest
import torch

from multiloss.layers.moe.routing import Router, router_logits, score_experts, select_experts


def test_logits_are_float32_under_bfloat16_autocast() -> None:
    x = torch.randn(5, 8)
    weight = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = router_logits(x, weight)
        plain = x @ weight.t()  # autocast would run this in bfloat16
    assert plain.dtype == torch.bfloat16
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, x @ weight.t())


def test_bfloat16_inputs_are_routed_in_float32() -> None:
    x = torch.randn(5, 8).bfloat16()
    weight = torch.randn(4, 8).bfloat16()
    logits = router_logits(x, weight)
    torch.testing.assert_close(logits, x.float() @ weight.float().t())


def test_softmax_scores_are_the_probabilities() -> None:
    logits = torch.randn(3, 5)
    scores, probs = score_experts(logits, "softmax")
    assert scores is probs
    torch.testing.assert_close(probs, torch.softmax(logits, -1))


def test_sigmoid_scores_and_normalized_probabilities() -> None:
    logits = torch.randn(3, 5)
    scores, probs = score_experts(logits, "sigmoid")
    torch.testing.assert_close(scores, torch.sigmoid(logits))
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    torch.testing.assert_close(probs, scores / scores.sum(-1, keepdim=True))


def test_top_k_and_gate_renormalization_by_hand() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    index, gates = select_experts(scores, 2)
    assert index.tolist() == [[1, 2]]
    torch.testing.assert_close(gates, torch.tensor([[0.5 / 0.8, 0.3 / 0.8]]))
    _, raw = select_experts(scores, 2, normalize=False)
    torch.testing.assert_close(raw, torch.tensor([[0.5, 0.3]]))


def test_bias_changes_the_choice_but_not_the_gate_weights() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    bias = torch.tensor([1.0, 0.0, 0.0, 0.0])
    index, gates = select_experts(scores, 2, bias=bias, normalize=False)
    assert index.tolist() == [[0, 1]]  # expert 0 chosen only thanks to its bias
    torch.testing.assert_close(gates, torch.tensor([[0.1, 0.5]]))  # unbiased scores


def test_router_module_jitter_only_in_training_and_within_bounds() -> None:
    router = Router(8, 4, 2, jitter=0.1)
    x = torch.randn(6, 8)
    router.eval()
    torch.testing.assert_close(router(x).logits, x @ router.weight.t())
    router.train()
    noisy = router(x).logits
    assert not torch.allclose(noisy, x @ router.weight.t())
    # Multiplicative noise on the input: each logit lies within the interval spanned by the
    # positive and negative parts of the products scaled by 0.9 and 1.1.
    products = x[:, None, :] * router.weight[None]
    upper = (products.clamp_min(0) * 1.1 + products.clamp_max(0) * 0.9).sum(-1)
    lower = (products.clamp_min(0) * 0.9 + products.clamp_max(0) * 1.1).sum(-1)
    assert bool(((noisy <= upper + 1e-5) & (noisy >= lower - 1e-5)).all())


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_router_gates_sum_to_one_when_normalized(score: str) -> None:
    out = Router(8, 6, 3, score=score)(torch.randn(7, 8))
    torch.testing.assert_close(out.gates.sum(-1), torch.ones(7))
    assert out.chosen.shape == (7, 3)
    assert "score='" + score + "'" in repr(Router(8, 6, 3, score=score))
