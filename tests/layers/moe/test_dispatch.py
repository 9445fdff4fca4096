"""Dispatch plans: stable sort by expert, ranks, capacity slots, blocked slots."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiloss.layers.moe.dispatch import blocked_slots, capacity_slots, sort_assignments


def test_sort_groups_by_expert_keeps_token_order_and_ranks() -> None:
    chosen = torch.tensor([[2, 0], [0, 1], [2, 1]])  # assignments 0..5 (token-major)
    sorted_ = sort_assignments(chosen, None, 3)
    assert sorted_.order.tolist() == [1, 2, 3, 5, 0, 4]
    assert sorted_.expert.tolist() == [0, 0, 1, 1, 2, 2]
    assert sorted_.rank.tolist() == [0, 1, 0, 1, 0, 1]
    assert sorted_.counts.tolist() == [2, 2, 2]


def test_padding_sorts_last_with_the_sentinel_expert() -> None:
    chosen = torch.tensor([[0], [1], [0]])
    sorted_ = sort_assignments(chosen, torch.tensor([True, False, True]), 2)
    assert sorted_.expert.tolist() == [0, 0, 2]
    assert sorted_.order.tolist() == [0, 2, 1]
    assert sorted_.counts.tolist() == [2, 0]


def test_priority_orders_each_group_by_descending_score() -> None:
    chosen = torch.tensor([[0], [0], [0], [1]])
    priority = torch.tensor([[0.2], [0.9], [0.5], [0.1]])
    sorted_ = sort_assignments(chosen, None, 2, priority)
    assert sorted_.order.tolist() == [1, 2, 0, 3]


def test_capacity_slots_keep_the_first_ranks_and_drop_the_rest() -> None:
    chosen = torch.tensor([[0], [0], [0], [1]])
    plan = capacity_slots(sort_assignments(chosen, None, 2), capacity=2, top_k=1)
    # Expert 0 owns rows 0-1 and keeps tokens 0, 1; token 2 goes to the spare row 4.
    assert plan.slot.tolist() == [0, 1, 4, 2]
    assert plan.source.tolist() == [0, 1, 3, 4]  # row 3 is empty: token index T = 4
    assert plan.kept.tolist() == [2, 1]
    assert plan.block_expert is None


def test_blocked_slots_by_hand() -> None:
    chosen = torch.tensor([[0], [0], [0], [1]])
    plan = blocked_slots(sort_assignments(chosen, None, 2), block=2, top_k=1)
    # 4 assignments, block 2, 2 experts -> 2 + 2 = 4 blocks; expert 0 uses blocks 0-1.
    assert plan.slot.tolist() == [0, 1, 2, 4]
    assert plan.source.tolist() == [0, 1, 2, 4, 3, 4, 4, 4]
    assert plan.block_expert is not None
    assert plan.block_expert.tolist() == [0, 0, 1, 1]


@settings(max_examples=50, deadline=None)
@given(
    tokens=st.integers(1, 20),
    experts=st.integers(1, 6),
    block=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_blocked_layout_puts_each_assignment_in_a_block_of_its_expert(
    tokens: int, experts: int, block: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    top_k = min(2, experts)
    chosen = torch.stack(
        [torch.randperm(experts, generator=generator)[:top_k] for _ in range(tokens)]
    )
    valid = torch.rand(tokens, generator=generator) > 0.2
    plan = blocked_slots(sort_assignments(chosen, valid, experts), block, top_k)
    assert plan.block_expert is not None
    slots = plan.source.numel()
    for t in range(tokens):
        for k in range(top_k):
            row = int(plan.slot[t * top_k + k])
            if not valid[t]:
                assert row == slots  # the spare row
                continue
            assert int(plan.source[row]) == t
            assert int(plan.block_expert[row // block]) == int(chosen[t, k])
    filled = int((plan.source < tokens).sum())
    assert filled == int(valid.sum()) * top_k
