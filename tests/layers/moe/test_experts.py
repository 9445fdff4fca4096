"""ExpertFFN: every layout computes each assignment with its own expert."""

from __future__ import annotations

import pytest
import torch

from multiloss.layers.moe.dispatch import sort_assignments
from multiloss.layers.moe.experts import ExpertFFN, block_rows


def _per_assignment(experts: ExpertFFN, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(*chosen.shape, x.shape[-1])
    for t in range(chosen.shape[0]):
        for k in range(chosen.shape[1]):
            e = int(chosen[t, k])
            out[t, k] = experts.activate(x[t] @ experts.w_in[e]) @ experts.w_out[e]
    return out


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "blocked"])
@pytest.mark.parametrize("activation", ["swiglu", "relu"])
def test_dropless_layouts_equal_per_assignment_products(grouped: bool, activation: str) -> None:
    experts = ExpertFFN(8, 12, 5, activation)
    x = torch.randn(9, 8)
    chosen = torch.stack([torch.randperm(5)[:2] for _ in range(9)])
    valid = torch.rand(9) > 0.3
    out, kept = experts(x, sort_assignments(chosen, valid, 5), 2, capacity=None, grouped=grouped)
    expected = _per_assignment(experts, x, chosen) * valid[:, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert kept.sum() == 2 * valid.sum()


def test_grouped_layout_without_padding_skips_the_mask() -> None:
    experts = ExpertFFN(8, 12, 3)
    x = torch.randn(6, 8)
    chosen = torch.stack([torch.randperm(3)[:2] for _ in range(6)])
    sorted_ = sort_assignments(chosen, None, 3)
    out, _ = experts(x, sorted_, 2, capacity=None, grouped=True, padded=False)
    torch.testing.assert_close(out, _per_assignment(experts, x, chosen), rtol=1e-5, atol=1e-6)


def test_capacity_layout_zeroes_dropped_assignments() -> None:
    experts = ExpertFFN(8, 12, 2)
    x = torch.randn(4, 8)
    chosen = torch.tensor([[0], [0], [0], [1]])
    out, kept = experts(x, sort_assignments(chosen, None, 2), 1, capacity=2, grouped=False)
    expected = _per_assignment(experts, x, chosen)
    expected[2] = 0.0  # the third token for expert 0 exceeds its capacity of 2
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert kept.tolist() == [2, 1]


def test_garbage_rows_of_the_grouped_kernel_never_reach_outputs_or_gradients() -> None:
    # Most tokens are padding: the grouped kernel leaves their rows uninitialized.
    experts = ExpertFFN(8, 16, 3)
    x = torch.randn(50, 8, requires_grad=True)
    chosen = torch.randint(0, 3, (50, 1))
    valid = torch.zeros(50, dtype=torch.bool)
    valid[:3] = True
    out, _ = experts(x, sort_assignments(chosen, valid, 3), 1, capacity=None, grouped=True)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))
    assert x.grad is not None
    assert torch.equal(x.grad[3:], torch.zeros_like(x.grad[3:]))
    assert torch.isfinite(experts.w_in.grad).all()


def test_block_rows_bounds() -> None:
    assert block_rows(8192, 32) == 256
    assert block_rows(10, 4) == 8  # at least 8
    assert block_rows(100, 3) == 40  # ceil(100 / 3) = 34, rounded up to 8


def test_initialization_matches_linear_bounds_and_repr() -> None:
    experts = ExpertFFN(16, 64, 3, "gelu")
    assert experts.w_in.shape == (3, 16, 64)
    assert float(experts.w_in.detach().abs().max()) <= 16**-0.5
    assert float(experts.w_out.detach().abs().max()) <= 64**-0.5
    assert repr(experts) == "ExpertFFN(num_experts=3, dim=16, hidden=64, activation='gelu')"
