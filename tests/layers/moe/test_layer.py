"""MixtureOfExperts end to end: equality with the loop reference, padding, naming, autocast."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import multiloss as ml
from multiloss.layers import MixtureOfExperts
from tests.layers.moe.reference import kept_assignments, reference_moe, reference_routing

CONFIGS: list[dict[str, Any]] = [
    {"backend": "grouped_mm"},
    {"backend": "blocked"},
    {"top_k": 1},
    {"top_k": 4, "backend": "blocked"},
    {"score": "sigmoid"},
    {"activation": "gelu", "backend": "blocked"},
    {"activation": "geglu"},
    {"capacity_factor": 0.5},
    {"capacity_factor": 0.5, "drop_policy": "position"},
    {"capacity_factor": 2.0, "top_k": 1},
    {"normalize_gates": False},
]


def _layer(**kwargs: Any) -> MixtureOfExperts:
    options: dict[str, Any] = {"balance": {"switch": 0.01, "z": 0.001}}
    options.update(kwargs)
    return MixtureOfExperts(8, 16, 4, **options)


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "padded"])
def test_forward_and_gradients_equal_the_loop_reference(
    config: dict[str, Any], masked: bool
) -> None:
    layer = _layer(**config)
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = torch.rand(3, 5) > 0.3 if masked else None
    out = layer(x, mask)
    expected = reference_moe(layer, x, mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)

    grad = torch.randn_like(out)
    params = [x, layer.router.weight, layer.experts.w_in, layer.experts.w_out]
    ours = torch.autograd.grad(out, params, grad)
    theirs = torch.autograd.grad(expected, params, grad)
    for name, a, b in zip(["x", "router", "w_in", "w_out"], ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")


def test_capacity_dropping_counts_match_the_reference() -> None:
    layer = _layer(capacity_factor=0.5)
    x = torch.randn(2, 10, 8)
    layer(x)
    probs, chosen, _ = reference_routing(layer, x.reshape(-1, 8))
    kept, routed = kept_assignments(layer, probs, chosen, [True] * 20)
    diagnostics = layer.aux_loss_diagnostics()
    # capacity = ceil(0.5 * 20 * 2 / 4) = 5 slots per expert
    assert len(kept) == sum(min(count, 5) for count in routed)
    assert diagnostics["dropped_fraction"] == pytest.approx(1 - len(kept) / 40)
    for expert in range(4):
        assert diagnostics[f"load/{expert}"] == pytest.approx(routed[expert] / 40)


def test_padding_changes_no_statistic_no_loss_and_outputs_zero() -> None:
    layer = _layer(balance={"switch": 0.01, "z": 0.001, "global": 0.01, "sequence": 0.01})
    layer.eval()  # no step accumulation between the two calls
    real = torch.randn(2, 4, 8)
    padded = torch.cat([real, 100 * torch.randn(2, 3, 8)], dim=1)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[:, :4] = True
    with ml.collect(layer) as clean:
        out_clean = layer(real)
    stats_clean = layer.aux_loss_diagnostics()
    with ml.collect(layer) as book:
        out = layer(padded, mask)
    stats = layer.aux_loss_diagnostics()
    assert sorted(book) == sorted(clean) == ["global", "sequence", "switch", "z"]
    for name in clean:
        torch.testing.assert_close(book[name], clean[name])
    assert stats == pytest.approx(stats_clean)
    torch.testing.assert_close(out[:, :4], out_clean)
    assert torch.equal(out[:, 4:], torch.zeros(2, 3, 8))


def test_integer_attention_mask_is_accepted() -> None:
    layer = _layer()
    x = torch.randn(2, 3, 8)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(layer(x, mask), layer(x, mask.bool()))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.moe = _layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.moe(self.norm(x))


def test_three_layers_give_three_separately_named_terms_each_once() -> None:
    model = nn.Sequential(*[Block() for _ in range(3)])
    with ml.collect(model) as book:
        model(torch.randn(2, 3, 8))
    expected = [f"{i}.moe/{term}" for i in range(3) for term in ("switch", "z")]
    assert sorted(book) == expected
    assert book.weights == {name: 0.01 if name.endswith("switch") else 0.001 for name in expected}
    per_layer = [block.moe.compute_aux_loss() for block in model]
    torch.testing.assert_close(book.total(), sum(per_layer))


def test_autocast_runs_experts_in_bfloat16_and_router_in_float32() -> None:
    layer = _layer(balance={"z": 1.0})
    x = torch.randn(2, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    cache = layer._aux_cache
    assert out.dtype == torch.bfloat16
    assert cache.logits.dtype == torch.float32
    torch.testing.assert_close(cache.logits, x.reshape(-1, 8) @ layer.router.weight.t())
    torch.testing.assert_close(out.float(), reference_moe(layer, x), rtol=0.05, atol=0.02)


def test_half_precision_module_keeps_the_bias_in_float32() -> None:
    layer = _layer(balance={"bias": 0.001})
    layer.expert_bias.fill_(1e-4)  # not representable exactly in bfloat16
    layer.to(torch.bfloat16)
    assert layer.expert_bias.dtype == torch.float32
    assert float(layer.expert_bias[0]) == pytest.approx(1e-4, rel=1e-6)
    assert layer.experts.w_in.dtype == torch.bfloat16
    out = layer(torch.randn(2, 3, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_empty_input_returns_an_empty_output() -> None:
    layer = _layer()
    out = layer(torch.randn(0, 8))
    assert out.shape == (0, 8)


def test_jitter_only_in_training() -> None:
    layer = _layer(jitter=0.5)
    x = torch.randn(4, 8)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    layer(x)
    first = layer._aux_cache.logits
    layer(x)
    assert not torch.allclose(first, layer._aux_cache.logits)


def test_repr_shows_the_hyperparameters() -> None:
    text = repr(_layer(capacity_factor=1.25, jitter=0.01, aux_loss_weight=2.0))
    for part in (
        "balance={'switch': 0.01, 'z': 0.001}",
        "capacity_factor=1.25",
        "drop_policy='probability'",
        "aux_loss_weight=2",
        "num_experts=4, top_k=2, score='softmax'",
        "jitter=0.01",
        "activation='swiglu'",
    ):
        assert part in text, part
